"""Plug the Megatron trainers into Oumi the moment Oumi's modules load.

Importing Oumi costs ~20 s on a small machine and Megatron worker processes never need it. So
``register_with_oumi()`` (run by ``import oumi_megatron``, and at interpreter start-up by the
``oumi_megatron.pth`` file our wheel installs) only arms a post-import hook: when Oumi's
``training_params``, ``oumi.datasets.grpo.rewards``, ``oumi.cli.train`` or ``oumi.train`` module
has been executed, the matching callback adds our ``TrainerType`` members, registers our reward
functions in Oumi's registry (Oumi's reward builder imports its rewards module first), or routes
``MEGATRON_*`` recipes to our trainers (``oumi_entry.py``). Modules already imported are handled
at once.

Set ``OUMI_MEGATRON_OUMI_HOOKS=0`` to leave Oumi's CLI untouched (the enum is still extended).
"""

from __future__ import annotations

import importlib.machinery
import os
import sys

TYPE_CHECKING = False  # typing itself costs ~5 ms
if TYPE_CHECKING:
    from collections.abc import Callable
    from enum import Enum

_TRAINING_PARAMS = "oumi.core.configs.params.training_params"
_OUMI_REWARDS = "oumi.datasets.grpo.rewards"  # Oumi's build_reward_functions imports it

# Imports kept to the minimum: this module runs at every interpreter start (oumi_megatron.pth).
MEGATRON_TRAINER_VALUES: dict[str, str] = {
    "MEGATRON_GRPO": "megatron_grpo",
    "MEGATRON_SFT": "megatron_sft",
}


def extend_enum(enum_cls: type[Enum], name: str, value: str) -> Enum:
    """Adds member ``name = value`` to ``enum_cls`` (no-op if already present).

    Raises:
        ValueError: if ``name`` or ``value`` is already taken by a different member.
    """
    existing = enum_cls.__members__.get(name)
    if existing is not None:
        if existing.value != value:
            raise ValueError(
                f"{enum_cls.__name__}.{name} already exists with value {existing.value!r}"
            )
        return existing
    if value in enum_cls._value2member_map_:
        raise ValueError(f"{enum_cls.__name__} already has a member with value {value!r}")

    # Mirrors enum._proto_member.__set_name__ (CPython 3.12) for a plain Enum whose
    # members are bare objects, which is what TrainerType is.
    member = object.__new__(enum_cls)
    member._name_ = name
    member._value_ = value
    member.__objclass__ = enum_cls
    member._sort_order_ = len(enum_cls._member_names_)
    setattr(enum_cls, name, member)  # EnumType.__setattr__ allows it: not a member yet.
    enum_cls._member_names_.append(name)
    enum_cls._member_map_[name] = member
    enum_cls._value2member_map_[value] = member
    return member


def register_megatron_trainer_types() -> None:
    """Add `MEGATRON_GRPO` / `MEGATRON_SFT` to Oumi's `TrainerType` (idempotent).

    Oumi parses `training.trainer_type` into its closed Enum, so a new trainer has to be a real
    member: added the way `enum` itself does while building a class, which keeps value/name
    lookup, `list(TrainerType)`, pickling and OmegaConf round trips working.
    """
    from oumi_megatron import patches

    patches.check("oumi-trainer-type")
    trainer_type = sys.modules[_TRAINING_PARAMS].TrainerType
    for name, value in MEGATRON_TRAINER_VALUES.items():
        extend_enum(trainer_type, name, value)


def _route_cli_train(module) -> None:
    from oumi_megatron.oumi_entry import route_cli_train

    route_cli_train(module)


def _route_train_api(module) -> None:
    from oumi_megatron.oumi_entry import route_train_api

    route_train_api(module)


def _register_rewards(module) -> None:
    from oumi.core.registry import REGISTRY

    from oumi_megatron.rewards.registry import register_builtins

    register_builtins(REGISTRY)


def _hooks() -> dict[str, Callable]:
    hooks: dict[str, Callable] = {
        _TRAINING_PARAMS: lambda _: register_megatron_trainer_types(),
        _OUMI_REWARDS: _register_rewards,
    }
    if os.environ.get("OUMI_MEGATRON_OUMI_HOOKS", "1") != "0":
        hooks["oumi.cli.train"] = _route_cli_train
        hooks["oumi.train"] = _route_train_api
    return hooks


class _AfterImport:
    """Runs ``callbacks[name](module)`` right after module ``name`` has executed (a meta path
    finder; not derived from ``importlib.abc``, whose import costs ~25 ms at every start-up)."""

    def __init__(self, callbacks: dict[str, Callable]):
        self.callbacks = callbacks

    def find_spec(self, fullname, path, target=None):
        callback = self.callbacks.pop(fullname, None)
        if callback is None:
            return None
        if not self.callbacks:
            sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_call(module):
            exec_module(module)
            sys.modules[fullname] = module
            callback(module)

        spec.loader.exec_module = exec_then_call  # type: ignore[method-assign]
        return spec


def register_with_oumi() -> None:
    """Make `training.trainer_type: MEGATRON_GRPO` valid in Oumi and runnable by `oumi train`,
    now for Oumi modules already loaded, at their import for the others (idempotent)."""
    if any(isinstance(f, _AfterImport) for f in sys.meta_path):
        return
    pending = {}
    for name, callback in _hooks().items():
        if name in sys.modules:
            callback(sys.modules[name])
        else:
            pending[name] = callback
    if pending:
        sys.meta_path.insert(0, _AfterImport(pending))

"""Register our trainer types with Oumi as soon as Oumi's TrainingParams module exists.

Importing Oumi costs ~20 s on a small machine; Megatron worker processes never need it. So
`import oumi_megatron` registers immediately if Oumi is already imported, and otherwise arms a
one-shot post-import hook on `oumi.core.configs.params.training_params`.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from enum import Enum
from typing import Final

_TARGET = "oumi.core.configs.params.training_params"

MEGATRON_TRAINER_VALUES: Final[dict[str, str]] = {
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
    trainer_type = sys.modules[_TARGET].TrainerType
    for name, value in MEGATRON_TRAINER_VALUES.items():
        extend_enum(trainer_type, name, value)


def _register() -> None:
    register_megatron_trainer_types()


class _RegisterAfterImport(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname != _TARGET:
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module):
            exec_module(module)
            sys.modules[fullname] = module
            _register()

        spec.loader.exec_module = exec_then_register  # type: ignore[method-assign]
        return spec


def register_with_oumi() -> None:
    """Make `training.trainer_type: MEGATRON_GRPO` valid in Oumi, now or when Oumi loads."""
    if _TARGET in sys.modules:
        _register()
    elif not any(isinstance(f, _RegisterAfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterAfterImport())

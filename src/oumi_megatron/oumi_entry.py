"""``oumi train -c recipe.yaml`` and ``oumi.train(config)`` run the Megatron trainers.

Oumi 0.9 has no trainer plug-in point: its ``TrainerType`` enum, ``TrainingConfig`` dataclass and
``build_trainer`` are closed. So, when Oumi's modules load (``registration.py``), two of its
functions are wrapped, each handing over only for a ``MEGATRON_*`` trainer type and calling Oumi's
own function for every other recipe:

- ``oumi.cli.train.train`` (the ``oumi train`` command, also what ``oumi distributed torchrun -m
  oumi train`` runs on every rank): the recipe's ``training.trainer_type`` is read from the YAML
  and the overrides; a Megatron recipe is then loaded, validated and trained by our CLI path.
- ``oumi.train.train`` (``oumi.train(config)`` from Python): a ``MegatronTrainingConfig`` (or an
  Oumi ``TrainingConfig`` whose trainer type is ``MEGATRON_*``) is trained by ``run_training``.

A newer Oumi that changed either function is detected here (``check_oumi_function``) and reported
once, naming what changed and the fallback (``oumi-megatron train``); tests pin the contract. If
Oumi ever ships the trainer plug-in group of docs/oumi_integration.md, it is used instead.
"""

from __future__ import annotations

import functools
import inspect
import logging
import warnings
from pathlib import Path
from typing import Any

_MARK = "__oumi_megatron_route__"
PLUGIN_GROUP = "oumi.trainer_plugins"
"""Entry-point group of the upstream proposal (docs/oumi_integration.md)."""

logger = logging.getLogger("oumi_megatron")


def oumi_has_plugin_registry() -> bool:
    """True if the installed Oumi consults trainer plug-ins itself (the upstream proposal)."""
    import importlib.util

    try:
        return importlib.util.find_spec("oumi.core.trainers.plugins") is not None
    except (ImportError, ValueError):
        return False


class OumiContractError(RuntimeError):
    """The installed Oumi no longer has the function shape the routing relies on."""


def check_oumi_function(module: Any, name: str, parameters: tuple[str, ...]) -> Any:
    """``module.name`` if it is a function taking ``parameters``; else ``OumiContractError``."""
    function = getattr(module, name, None)
    if not callable(function):
        raise OumiContractError(f"{module.__name__}.{name} is missing")
    names = set(inspect.signature(function).parameters)
    missing = [p for p in parameters if p not in names]
    if missing:
        raise OumiContractError(
            f"{module.__name__}.{name} no longer takes {', '.join(missing)} "
            f"(it takes {', '.join(sorted(names))})"
        )
    return function


def _report(error: OumiContractError) -> None:
    from importlib.metadata import version

    warnings.warn(
        f"oumi-megatron cannot route MEGATRON_* recipes through this Oumi ({version('oumi')}): "
        f"{error}. Fix: run them with 'oumi-megatron train -c recipe.yaml' (or 'torchrun -m "
        f"oumi_megatron train ...'), or install the Oumi version pinned by oumi-megatron.",
        RuntimeWarning,
        stacklevel=3,
    )


def _wrap(module: Any, name: str, parameters: tuple[str, ...], make) -> None:
    if oumi_has_plugin_registry():
        return  # Oumi finds us through the entry point.
    try:
        original = check_oumi_function(module, name, parameters)
    except OumiContractError as error:
        _report(error)
        return
    if getattr(original, _MARK, False):
        return
    routed = functools.wraps(original)(make(original))
    setattr(routed, _MARK, True)
    setattr(module, name, routed)


# ---- oumi train (CLI) ----------------------------------------------------------------------


def route_cli_train(module: Any) -> None:
    """Wraps ``oumi.cli.train.train`` (the typer command; its signature is kept)."""
    _wrap(module, "train", ("ctx", "config"), _cli_train)


def _cli_train(original):
    def train(*args, **kwargs):
        recipe = megatron_recipe(kwargs.get("ctx"), kwargs.get("config"))
        if recipe is None:
            return original(*args, **kwargs)
        from oumi_megatron.cli import run_command

        code = run_command("train", recipe[0], recipe[1])
        if code:
            raise SystemExit(code)

    return train


def megatron_recipe(ctx: Any, config: str | None) -> tuple[str, list[str]] | None:
    """(config path, overrides) when ``oumi train``'s recipe names a MEGATRON_* trainer."""
    from oumi.cli import cli_utils
    from oumi.cli.alias import AliasType, try_get_config_name_for_alias

    from oumi_megatron.cli import oumi_style_overrides

    if ctx is None or config is None:
        return None
    path = str(
        cli_utils.resolve_and_fetch_config(try_get_config_name_for_alias(config, AliasType.TRAIN))
    )
    try:
        extra = oumi_style_overrides(list(ctx.args))
    except SystemExit:
        return None  # Oumi reports its own argument errors.
    overrides = [a for a in extra if "=" in a] + cli_utils.collect_config_overrides(ctx)
    if not is_megatron_trainer(peek_trainer_type(path, overrides)):
        return None
    positional = [a for a in extra if "=" not in a]
    if positional:
        raise SystemExit(
            f"oumi train: unexpected argument(s) {positional}. Fix: give overrides as "
            f"--section.key VALUE, --section.key=VALUE or section.key=VALUE."
        )
    return path, overrides


def peek_trainer_type(path: str | Path, overrides: list[str]) -> str | None:
    """``training.trainer_type`` of a YAML file after overrides, read cheaply (no Oumi config);
    None if unreadable (Oumi then reports the problem in its own words)."""
    import yaml

    value = None
    try:
        tree = yaml.safe_load(Path(path).read_text())
        value = (tree.get("training") or {}).get("trainer_type")
    except (OSError, yaml.YAMLError, AttributeError):
        pass
    for item in overrides:
        key, _, override = item.removeprefix("--").partition("=")
        if key == "training.trainer_type":
            value = override
    return value if isinstance(value, str) else None


def is_megatron_trainer(trainer_type: Any) -> bool:
    """True for ``MEGATRON_GRPO``/``megatron_grpo`` and the other Megatron trainer names."""
    from oumi_megatron.registration import MEGATRON_TRAINER_VALUES

    name = getattr(trainer_type, "name", trainer_type)
    if not isinstance(name, str):
        return False
    return name.upper() in MEGATRON_TRAINER_VALUES or name in MEGATRON_TRAINER_VALUES.values()


# ---- oumi.train(config) (Python) -----------------------------------------------------------


def route_train_api(module: Any) -> None:
    """Wraps ``oumi.train.train`` (what ``oumi.train(config)`` calls)."""
    _wrap(module, "train", ("config",), _api_train)


def _api_train(original):
    def train(config, *args, **kwargs):
        if not is_megatron_trainer(config.training.trainer_type):
            return original(config, *args, **kwargs)
        from oumi_megatron.run import run_training

        run_training(config)
        return None

    return train


def plugin_entry() -> dict[str, Any]:
    """What the upstream ``oumi.trainer_plugins`` entry point returns (docs/oumi_integration.md)."""
    from oumi_megatron.registration import MEGATRON_TRAINER_VALUES

    return {
        "trainer_types": dict(MEGATRON_TRAINER_VALUES),
        "load_config": "oumi_megatron.config:load_config",
        "train": "oumi_megatron.run:run_training",
    }

"""Settings that both Oumi's sections and ours define, and how the two are merged.

Our field is canonical; the Oumi path is an accepted alias with Oumi's meaning, read into our
field. Merge rule: a value set in only one place wins; the same setting given two different
values is an error naming both paths. The setting then lives in one place only: Oumi's field is
left at (or reset to) its default, never a copy, so nothing can disagree with it later, a saved
YAML reloads as it was, and Oumi's own checks (e.g. "reward_functions only for TRL_GRPO") never
see it.

Two passes use this table: ``merge_raw_aliases`` on the raw YAML tree (where "set" means
"present in the file or overrides"), and ``reconcile_aliases`` on built objects (where
"set" means "differs from the default", the best that programmatic construction offers).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from pydantic import ValidationError

from oumi_megatron.config.errors import ConfigError
from oumi_megatron.config.schema import field_default

LR_DECAY_STYLES: Final = ("constant", "linear", "cosine")


def _same(value: Any) -> Any:
    return value


def _lr_style_from_oumi(value: Any) -> Any:
    if value not in LR_DECAY_STYLES:
        raise ValueError(
            f"Megatron trainers support only {', '.join(LR_DECAY_STYLES)}. Fix: use one of "
            f"these (or set megatron.optimizer_config.lr_decay_style)."
        )
    return value


_DTYPES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "auto": "auto"}


def _dtype_from_oumi(value: Any) -> Any:
    name = str(value).removeprefix("torch.")
    if name in _DTYPES.values():
        return name
    if name not in _DTYPES:
        raise ValueError(f"Fix: use one of {', '.join(_DTYPES)}.")
    return _DTYPES[name]


@dataclass(frozen=True)
class Alias:
    """``ours`` (canonical) and ``oumi`` paths naming one setting."""

    ours: str
    oumi: str
    to_ours: Callable[[Any], Any] = _same
    oumi_none_is_unset: bool = True
    """Oumi's ``None`` means "not set" (Oumi then falls back to a default)."""


ALIASES: Final[tuple[Alias, ...]] = (
    Alias("grpo.num_generations", "training.grpo.num_generations"),
    Alias("grpo.temperature", "training.grpo.temperature"),
    Alias("grpo.epsilon", "training.grpo.epsilon"),
    Alias("grpo.max_prompt_length", "training.grpo.max_prompt_length"),
    Alias("grpo.max_completion_length", "training.grpo.max_completion_length"),
    Alias("grpo.log_completions", "training.grpo.log_completions"),
    Alias("grpo.reward_functions", "training.reward_functions"),
    Alias("grpo.reward_function_kwargs", "training.reward_function_kwargs"),
    Alias("megatron.micro_batch_size", "training.per_device_train_batch_size"),
    Alias(
        "megatron.transformer_config.params_dtype",
        "model.torch_dtype_str",
        to_ours=_dtype_from_oumi,
    ),
    Alias(
        "megatron.optimizer_config.clip_grad",
        "training.max_grad_norm",
        to_ours=lambda v: 0.0 if v is None else v,  # Oumi/HF: None disables clipping.
        oumi_none_is_unset=False,
    ),
    Alias("megatron.optimizer_config.weight_decay", "training.weight_decay"),
    Alias("megatron.optimizer_config.adam_beta1", "training.adam_beta1"),
    Alias("megatron.optimizer_config.adam_beta2", "training.adam_beta2"),
    Alias("megatron.optimizer_config.adam_eps", "training.adam_epsilon"),
    Alias("megatron.optimizer_config.lr_warmup_steps", "training.warmup_steps"),
    Alias("megatron.optimizer_config.lr_warmup_fraction", "training.warmup_ratio"),
    Alias(
        "megatron.optimizer_config.lr_decay_style",
        "training.lr_scheduler_type",
        to_ours=_lr_style_from_oumi,
    ),
)

OUMI_ALIAS_PATHS: Final[frozenset[str]] = frozenset(a.oumi for a in ALIASES)


def _conflict(alias: Alias, ours: Any, oumi: Any) -> ConfigError:
    return ConfigError(
        f"Conflicting values for one setting: '{alias.ours}' = {ours!r} but "
        f"'{alias.oumi}' = {oumi!r}. Fix: set it in one place only ('{alias.ours}' is "
        f"canonical), or give both the same value."
    )


def _convert(alias: Alias, value: Any) -> Any:
    try:
        return alias.to_ours(value)
    except ValueError as e:
        raise ConfigError(f"Unsupported value for '{alias.oumi}': {value!r}. {e}") from e


# --- raw tree pass -------------------------------------------------------------------


def _lookup(tree: dict[str, Any], path: str) -> tuple[bool, Any]:
    node: Any = tree
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _pop(tree: dict[str, Any], path: str) -> None:
    *parents, leaf = path.split(".")
    node: Any = tree
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node.pop(leaf, None)


def _put(tree: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node = tree
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}  # An empty `grpo:` (None) becomes a mapping.
        node = node[part]
    node[leaf] = value


def merge_raw_aliases(tree: dict[str, Any]) -> None:
    """Moves every Oumi alias found in ``tree`` onto our path, raising on conflicts.

    The Oumi key is removed so Oumi's own constructors never see it: e.g. Oumi rejects
    ``training.reward_functions`` for non-TRL trainers and temperatures above 1.
    """
    for alias in ALIASES:
        has_oumi, oumi_value = _lookup(tree, alias.oumi)
        if not has_oumi:
            continue
        _pop(tree, alias.oumi)
        if oumi_value is None and alias.oumi_none_is_unset:
            continue
        converted = _convert(alias, oumi_value)
        has_ours, ours_value = _lookup(tree, alias.ours)
        if has_ours and ours_value != converted:
            raise _conflict(alias, ours_value, oumi_value)
        _put(tree, alias.ours, converted)


# --- object pass ---------------------------------------------------------------------


def _owner(obj: Any, path: str) -> tuple[Any, str]:
    *parents, leaf = path.split(".")
    for part in parents:
        obj = getattr(obj, part)
    return obj, leaf


def reconcile_aliases(cfg: Any) -> bool:
    """Moves Oumi alias values set on ``cfg`` into our sections (Oumi's fields reset);
    returns whether any of ours changed."""
    moved = False
    for alias in ALIASES:
        ours_owner, ours_name = _owner(cfg, alias.ours)
        oumi_owner, oumi_name = _owner(cfg, alias.oumi)
        ours = getattr(ours_owner, ours_name)
        oumi = getattr(oumi_owner, oumi_name)
        oumi_is_set = oumi != field_default(oumi_owner, oumi_name) and not (
            oumi is None and alias.oumi_none_is_unset
        )
        if oumi_is_set:
            converted = _convert(alias, oumi)
            if ours != field_default(ours_owner, ours_name) and ours != converted:
                raise _conflict(alias, ours, oumi)
            moved = moved or ours != converted
            try:
                setattr(ours_owner, ours_name, converted)
            except ValidationError as e:
                raise ConfigError(
                    f"Invalid value for '{alias.oumi}': {oumi!r}. {e.errors()[0]['msg']}. "
                    f"Fix: set a valid value (it is used as '{alias.ours}')."
                ) from e
        setattr(oumi_owner, oumi_name, field_default(oumi_owner, oumi_name))  # one place only
    return moved

"""Settings that both Oumi's sections and ours define, and how the two are merged.

Our field is canonical; the Oumi path is an accepted alias with Oumi's meaning, read into our
field. Merge rule: a value set in only one place wins; the same setting given two different
values is an error naming both paths. The setting then lives in one place only: Oumi's field is
left at (or reset to) its default, never a copy, so nothing can disagree with it later, a saved
YAML reloads as it was, and Oumi's own checks (e.g. "reward_functions only for TRL_GRPO") never
see it.

One merge, ``merge_raw_aliases``, over a raw tree: the YAML's (where "set" means "present in
the file or overrides"; before Oumi's sections are built, so Oumi never sees these values), or,
for sections built in Python, the tree ``take_oumi_values`` reads off them (where "set" means
"differs from the default"). Our sections are validated once, after the merge.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

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


def merge_raw_aliases(tree: dict[str, Any]) -> set[str]:
    """Moves every Oumi alias found in ``tree`` onto our path, raising on conflicts; returns
    our paths it wrote.

    The Oumi key is removed so Oumi's own constructors never see it: e.g. Oumi rejects
    ``training.reward_functions`` for non-TRL trainers and temperatures above 1.
    """
    written: set[str] = set()
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
        written.add(alias.ours)
    return written


# --- built objects -------------------------------------------------------------------


def _owner(obj: Any, path: str) -> tuple[Any, str]:
    *parents, leaf = path.split(".")
    for part in parents:
        obj = getattr(obj, part)
    return obj, leaf


def take_oumi_values(cfg: Any) -> dict[str, Any]:
    """The alias fields set on ``cfg``'s built Oumi sections, as a raw tree like a YAML's
    (``{"training": {...}, "model": {...}}``) for ``merge_raw_aliases``; each such field is
    reset to its default (the setting lives in our section only). "Set" means "differs from
    the default", the best that programmatic construction offers."""
    tree: dict[str, Any] = {}
    for alias in ALIASES:
        owner, name = _owner(cfg, alias.oumi)
        value, default = getattr(owner, name), field_default(owner, name)
        if value != default:
            _put(tree, alias.oumi, value)
            setattr(owner, name, default)
    return tree

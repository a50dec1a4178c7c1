"""``MegatronTrainingConfig``: Oumi's ``TrainingConfig`` plus ``megatron:`` and ``grpo:``."""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oumi.core.configs import TrainingConfig
from oumi.exceptions import OumiConfigError

from oumi_megatron.config.aliases import merge_raw_aliases, take_oumi_values
from oumi_megatron.config.errors import ConfigError
from oumi_megatron.config.grpo_params import GrpoParams
from oumi_megatron.config.megatron_params import MegatronParams
from oumi_megatron.config.pydantic_errors import validate_section
from oumi_megatron.config.static_checks import check_oumi_compatibility
from oumi_megatron.config.trainer_types import MEGATRON_TRAINER_TYPES


@dataclass
class MegatronTrainingConfig(TrainingConfig):
    """Oumi ``TrainingConfig`` with the Megatron trainers' own sections.

    ``megatron`` and ``grpo`` are validated pydantic objects (a dict is accepted and
    validated on construction). They are not OmegaConf-typed fields, so build instances
    with ``load_config`` / the ``from_*`` class methods below, not ``OmegaConf.structured``.
    """

    megatron: MegatronParams = field(default_factory=MegatronParams)
    """Megatron-Core settings; see ``MegatronParams``."""

    grpo: GrpoParams = field(default_factory=GrpoParams)
    """GRPO settings (merged with ``training.grpo``); see ``GrpoParams``."""

    def __post_init__(self) -> None:
        """Moves Oumi's twins of our fields into our sections and validates each section once
        (an instance nothing moved into is kept as it is), then runs Oumi's checks."""
        self.megatron, self.grpo = _our_sections(self)
        if self.training.trainer_type in MEGATRON_TRAINER_TYPES:
            # Before Oumi's post-init, whose messages for these are generic or misleading
            # (liger: "Unrecognized trainer type!").
            check_oumi_compatibility(self)
        try:
            super().__post_init__()
        except OumiConfigError as e:
            if isinstance(e, ConfigError):
                raise
            raise ConfigError(f"{e} (raised by Oumi's TrainingConfig checks)") from e

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        """Field name/value pairs, with our sections as plain dicts and Oumi's without the
        fields that alias ours (the setting lives in our field only).

        Oumi's ``to_yaml``/``print_config``/``__eq__`` iterate this way and only know
        dataclasses and primitives; a pydantic object would be dropped with a warning.
        """
        from oumi_megatron.config.aliases import OUMI_ALIAS_PATHS

        for name, value in super().__iter__():
            if isinstance(value, MegatronParams | GrpoParams):
                value = value.model_dump(mode="json")
            elif any(path.startswith(f"{name}.") for path in OUMI_ALIAS_PATHS):
                value = _without(dataclasses.asdict(value), name, OUMI_ALIAS_PATHS)
            yield name, value

    @property
    def megatron_checkpoint_dir(self) -> str:
        """``megatron.megatron_checkpoint_dir`` or ``<training.output_dir>/megatron_checkpoint``."""
        return self.megatron.checkpoint_dir(self.training.output_dir)

    @property
    def sampling_seed(self) -> int:
        """``grpo.seed``, or ``training.seed`` when unset."""
        return self.training.seed if self.grpo.seed is None else self.grpo.seed

    @property
    def packing_token_budget(self) -> int:
        """Tokens per packed micro batch (``megatron.max_tokens_per_microbatch`` or derived)."""
        if self.megatron.max_tokens_per_microbatch is not None:
            return self.megatron.max_tokens_per_microbatch
        sequence = self.grpo.max_prompt_length + self.grpo.max_completion_length
        return self.megatron.micro_batch_size * sequence

    # Oumi's loaders build the class through OmegaConf.structured, which cannot type a
    # pydantic field; route them through our loader instead.
    @classmethod
    def from_yaml(  # type: ignore[override]
        cls, config_path: str | Path, ignore_interpolation: bool = True
    ) -> MegatronTrainingConfig:
        """Same as ``load_config(config_path)``."""
        from oumi_megatron.config.loader import load_config

        return load_config(config_path)

    @classmethod
    def from_str(cls, config_str: str) -> MegatronTrainingConfig:  # type: ignore[override]
        """Loads a config from YAML text."""
        from oumi_megatron.config.loader import load_config_from_str

        return load_config_from_str(config_str)

    @classmethod
    def from_yaml_and_arg_list(  # type: ignore[override]
        cls,
        config_path: str | None,
        arg_list: list[str],
        logger: logging.Logger | None = None,
        ignore_interpolation: bool = True,
    ) -> MegatronTrainingConfig:
        """Same as ``load_config(config_path, arg_list)``; no path means overrides only."""
        from oumi_megatron.config.loader import load_config, load_config_from_str

        if config_path is None:
            return load_config_from_str("{}", arg_list)
        return load_config(config_path, arg_list)


def _our_sections(cfg: MegatronTrainingConfig) -> tuple[MegatronParams, GrpoParams]:
    """``megatron`` and ``grpo`` with the Oumi alias values set on ``cfg`` merged in (one raw
    merge: a value set in both places differently is refused), each validated once."""
    moved = take_oumi_values(cfg)
    sections = {"megatron": (cfg.megatron, MegatronParams), "grpo": (cfg.grpo, GrpoParams)}
    tree = {name: _as_data(value, model) for name, (value, model) in sections.items()}
    written = merge_raw_aliases({**tree, **moved})
    targets = {path.partition(".")[0] for path in written}
    megatron, grpo = (
        value if isinstance(value, model) and name not in targets
        else validate_section(tree[name], model, name)
        for name, (value, model) in sections.items()
    )  # fmt: skip
    return megatron, grpo  # type: ignore[return-value]


def _as_data(value: Any, model: type) -> dict:
    """A section as raw data: the fields set on an instance (so a merged Oumi value conflicts
    only with what was set), a copy of a dict."""
    if isinstance(value, model):
        return value.model_dump(exclude_unset=True)
    return copy.deepcopy(dict(value or {}))


def _without(tree: dict, section: str, paths) -> dict:
    """``tree`` (section ``section`` as a dict) without the dotted ``paths`` under it."""
    for path in paths:
        first, _, rest = path.partition(".")
        if first != section:
            continue
        *parents, leaf = rest.split(".")
        node = tree
        for part in parents:
            node = node.get(part, {})
        node.pop(leaf, None)
    return tree

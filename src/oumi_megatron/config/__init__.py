"""Typed, strict configuration of the Megatron trainers, layered on Oumi's config.

Importing this package registers ``TrainerType.MEGATRON_GRPO`` / ``MEGATRON_SFT`` in
Oumi's enum. Importing it also imports Oumi's config classes (slow the first time);
it does not import megatron or transformers models.
"""

from oumi_megatron.config.errors import ConfigError
from oumi_megatron.config.grpo_params import GrpoParams
from oumi_megatron.config.layout_checks import ValidatedLayout
from oumi_megatron.config.loader import load_config, load_config_from_str
from oumi_megatron.config.megatron_params import MegatronParams
from oumi_megatron.config.megatron_sections import (
    CheckpointConfig,
    DdpConfig,
    OptimizerConfig,
    TransformerConfig,
)
from oumi_megatron.config.model_shape import ModelShape
from oumi_megatron.config.trainer_types import MEGATRON_GRPO, MEGATRON_SFT, MEGATRON_TRAINER_TYPES
from oumi_megatron.config.training_config import MegatronTrainingConfig
from oumi_megatron.config.validation import validate_config

__all__ = [
    "MEGATRON_GRPO",
    "MEGATRON_SFT",
    "MEGATRON_TRAINER_TYPES",
    "CheckpointConfig",
    "ConfigError",
    "DdpConfig",
    "GrpoParams",
    "MegatronParams",
    "MegatronTrainingConfig",
    "ModelShape",
    "OptimizerConfig",
    "ValidatedLayout",
    "TransformerConfig",
    "load_config",
    "load_config_from_str",
    "validate_config",
]

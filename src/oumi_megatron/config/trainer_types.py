"""Oumi's `TrainerType` members for the Megatron trainers (registered in `registration`)."""

from __future__ import annotations

from typing import Final

from oumi.core.configs.params.training_params import TrainerType

from oumi_megatron.registration import (
    MEGATRON_TRAINER_VALUES,
    extend_enum,
    register_megatron_trainer_types,
)

register_megatron_trainer_types()

MEGATRON_GRPO: Final[TrainerType] = TrainerType["MEGATRON_GRPO"]
MEGATRON_SFT: Final[TrainerType] = TrainerType["MEGATRON_SFT"]
MEGATRON_TRAINER_TYPES: Final[frozenset[TrainerType]] = frozenset({MEGATRON_GRPO, MEGATRON_SFT})

__all__ = [
    "MEGATRON_GRPO",
    "MEGATRON_SFT",
    "MEGATRON_TRAINER_TYPES",
    "MEGATRON_TRAINER_VALUES",
    "extend_enum",
    "register_megatron_trainer_types",
]

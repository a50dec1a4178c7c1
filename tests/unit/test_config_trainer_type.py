"""MEGATRON_GRPO / MEGATRON_SFT are real members of Oumi's TrainerType enum."""

from __future__ import annotations

import pickle
from enum import Enum

import pytest
from omegaconf import OmegaConf
from oumi.core.configs.params.training_params import TrainerType, TrainingParams

from oumi_megatron.config import MEGATRON_GRPO, MEGATRON_SFT
from oumi_megatron.config.trainer_types import extend_enum


def test_lookup_by_value_and_name() -> None:
    assert TrainerType("megatron_grpo") is MEGATRON_GRPO
    assert TrainerType["MEGATRON_GRPO"] is MEGATRON_GRPO
    assert TrainerType("megatron_sft") is TrainerType.MEGATRON_SFT is MEGATRON_SFT
    assert isinstance(MEGATRON_GRPO, TrainerType)


def test_listed_after_oumi_members() -> None:
    members = list(TrainerType)
    assert members[-2:] == [MEGATRON_GRPO, MEGATRON_SFT]
    assert TrainerType.TRL_GRPO in members and TrainerType.HF in members
    assert len(TrainerType) == len(members)
    assert "MEGATRON_GRPO" in TrainerType.__members__


def test_omegaconf_structured_round_trip() -> None:
    params = TrainingParams(trainer_type=MEGATRON_GRPO)
    text = OmegaConf.to_yaml(OmegaConf.structured(params))
    assert "trainer_type: MEGATRON_GRPO" in text
    merged = OmegaConf.merge(OmegaConf.structured(TrainingParams), OmegaConf.create(text))
    assert OmegaConf.to_object(merged).trainer_type is MEGATRON_GRPO


def test_pickle_keeps_identity() -> None:
    assert pickle.loads(pickle.dumps(MEGATRON_SFT)) is MEGATRON_SFT


def test_extend_enum_is_idempotent_and_refuses_clashes() -> None:
    class Color(Enum):
        RED = "red"

    green = extend_enum(Color, "GREEN", "green")
    assert extend_enum(Color, "GREEN", "green") is green
    assert list(Color) == [Color.RED, green]
    with pytest.raises(ValueError, match="already exists"):
        extend_enum(Color, "GREEN", "lime")
    with pytest.raises(ValueError, match="already has a member with value 'red'"):
        extend_enum(Color, "CRIMSON", "red")

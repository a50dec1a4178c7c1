"""Unknown keys are rejected everywhere with the full dotted path and a did-you-mean."""

from __future__ import annotations

import pytest

from oumi_megatron.config import ConfigError, MegatronParams
from oumi_megatron.config.pydantic_errors import validate_section


def _message(load, *overrides: str, text: str | None = None) -> str:
    with pytest.raises(ConfigError) as err:
        load(*overrides, text=text)
    return str(err.value)


def test_typo_in_megatron(load) -> None:
    assert _message(load, "megatron.tensor_model_parallel_szie=2") == (
        "Unknown key 'megatron.tensor_model_parallel_szie'. "
        "Did you mean 'tensor_model_parallel_size'?"
    )


def test_typo_in_megatron_subsection(load) -> None:
    assert _message(load, "megatron.ddp_config.overlap_grad_reduc=true") == (
        "Unknown key 'megatron.ddp_config.overlap_grad_reduc'. Did you mean 'overlap_grad_reduce'?"
    )


def test_typo_in_grpo(load) -> None:
    assert _message(load, "grpo.num_generation=4") == (
        "Unknown key 'grpo.num_generation'. Did you mean 'num_generations'?"
    )


def test_typo_in_oumi_section(load) -> None:
    assert _message(load, "training.learning_rat=0.1") == (
        "Unknown key 'training.learning_rat'. Did you mean 'learning_rate'?"
    )


def test_typo_in_oumi_nested_section(load) -> None:
    assert _message(load, "training.grpo.temprature=0.5") == (
        "Unknown key 'training.grpo.temprature'. Did you mean 'temperature'?"
    )


def test_typo_inside_a_list_item(load) -> None:
    assert _message(load, "data.train.datasets[0].dataset_nme=x") == (
        "Unknown key 'data.train.datasets[0].dataset_nme'. Did you mean 'dataset_name'?"
    )


def test_typo_in_section_name(load, grpo_yaml: str) -> None:
    assert _message(load, text=grpo_yaml.replace("megatron:", "megatorn:")) == (
        "Unknown key 'megatorn'. Did you mean 'megatron'?"
    )


def test_no_close_match_lists_valid_keys(load) -> None:
    message = _message(load, "megatron.checkpoint_config.zzz=1")
    assert message == (
        "Unknown key 'megatron.checkpoint_config.zzz'. Valid keys here: "
        "keep_last, use_async_checkpoint, use_fully_parallel_strategy."
    )


def test_all_typos_reported_at_once(load) -> None:
    message = _message(load, "grpo.num_generation=4", "training.learning_rat=0.1")
    assert message.count("Unknown key") == 2


def test_free_form_dicts_are_not_checked(load) -> None:
    cfg = load("data.train.datasets[0].dataset_kwargs.anything_goes=1")
    assert cfg.data.train.datasets[0].dataset_kwargs == {"anything_goes": 1}


def test_direct_construction_also_suggests() -> None:
    with pytest.raises(ConfigError) as err:
        validate_section({"optimizer_config": {"clip_gard": 1.0}}, MegatronParams, "megatron")
    assert str(err.value) == (
        "Unknown key 'megatron.optimizer_config.clip_gard'. Did you mean 'clip_grad'?"
    )

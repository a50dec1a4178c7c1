"""GrpoParams: ranges and cross-field rules."""

from __future__ import annotations

import pytest

from oumi_megatron.config import ConfigError, GrpoParams
from oumi_megatron.config.pydantic_errors import validate_section


def _error(**fields) -> str:
    with pytest.raises(ConfigError) as err:
        validate_section(fields, GrpoParams, "grpo")
    return str(err.value)


def test_one_generation_per_prompt(load) -> None:
    with pytest.raises(ConfigError) as err:
        load("grpo.num_generations=1")
    assert str(err.value).startswith(
        "Invalid value for 'grpo.num_generations': 1. Input should be greater than or equal "
        "to 2. Fix: set 'grpo.num_generations' to a valid value (Completions sampled per "
        "prompt (the group). At least 2: advantages are relative to the group."
    )


@pytest.mark.parametrize(
    ("temperature", "rule"),
    [(0.0, "Input should be greater than 0"), (2.5, "Input should be less than or equal to 2")],
)
def test_temperature_out_of_range(temperature: float, rule: str) -> None:
    assert _error(temperature=temperature).startswith(
        f"Invalid value for 'grpo.temperature': {temperature}. {rule}."
    )


def test_temperature_bounds_are_inclusive_at_two() -> None:
    assert GrpoParams(temperature=2.0).temperature == 2.0


def test_top_p_out_of_range() -> None:
    assert _error(top_p=1.2).startswith("Invalid value for 'grpo.top_p': 1.2.")


def test_unknown_loss_aggregation() -> None:
    assert _error(loss_aggregation="seq-sum").startswith(
        "Invalid value for 'grpo.loss_aggregation': 'seq-sum'. Input should be 'token-mean', "
        "'seq-mean-token-mean' or 'seq-mean-token-sum-norm'."
    )


def test_truncated_is_cap_below_one() -> None:
    assert _error(truncated_importance_sampling_cap=0.5).startswith(
        "Invalid value for 'grpo.truncated_importance_sampling_cap': 0.5. "
        "Input should be greater than or equal to 1"
    )


def test_dr_grpo_with_std_scaling() -> None:
    assert _error(advantage_estimator="dr_grpo", scale_rewards=True).startswith(
        "grpo.scale_rewards (true) contradicts grpo.advantage_estimator 'dr_grpo'"
    )


def test_std_scaling_follows_the_estimator() -> None:
    assert GrpoParams().normalize_advantages_by_std is True
    assert GrpoParams(advantage_estimator="dr_grpo").normalize_advantages_by_std is False
    assert GrpoParams(scale_rewards=False).normalize_advantages_by_std is False


def test_reward_weights_length() -> None:
    assert _error(reward_functions=["a", "b"], reward_weights=[1.0]) == (
        "grpo.reward_weights has 1 entries ([1.0]) but grpo.reward_functions has 2 "
        "(['a', 'b']). Fix: give one weight per reward function."
    )


def test_reward_kwargs_for_unlisted_function() -> None:
    assert _error(reward_functions=["a"], reward_function_kwargs={"b": {}}).startswith(
        "grpo.reward_function_kwargs has entries ['b'] that are not in grpo.reward_functions"
    )


def test_clip_high_defaults_to_epsilon() -> None:
    assert GrpoParams(epsilon=0.2).clip_high == 0.2
    assert GrpoParams(epsilon=0.2, epsilon_high=0.28).clip_high == 0.28

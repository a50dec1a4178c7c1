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
        "'token-sum', 'seq-mean-token-sum', 'seq-mean-token-mean' or 'seq-mean-token-sum-norm'."
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


def test_std_scaling_follows_the_estimator_and_loss_type() -> None:
    assert GrpoParams().reward_scaling == "group"
    assert GrpoParams(advantage_estimator="dr_grpo").reward_scaling == "none"
    assert GrpoParams(loss_type="dr_grpo").reward_scaling == "none"
    assert GrpoParams(loss_type="dr_grpo", scale_rewards="group").reward_scaling == "group"
    assert GrpoParams(scale_rewards=False).reward_scaling == "none"
    assert GrpoParams(scale_rewards=True).reward_scaling == "group"
    assert GrpoParams(scale_rewards="batch").reward_scaling == "batch"


def test_reward_weights_length() -> None:
    assert _error(reward_functions=["a", "b"], reward_weights=[1.0]) == (
        "grpo.reward_weights has 1 entries ([1.0]) but grpo.reward_functions has 2 "
        "(['a', 'b']). Fix: give one weight per reward function."
    )


def test_reward_kwargs_for_unlisted_function() -> None:
    assert _error(reward_functions=["a"], reward_function_kwargs={"b": {}}).startswith(
        "grpo.reward_function_kwargs has entries ['b'] that are not in grpo.reward_functions"
    )


def test_clip_high_defaults_to_epsilon_except_dapo() -> None:
    assert GrpoParams(loss_type="grpo", epsilon=0.2).clip_high == 0.2
    assert GrpoParams(loss_type="grpo", epsilon=0.2, epsilon_high=0.3).clip_high == 0.3
    # DAPO's clip-higher unless set.
    assert GrpoParams(loss_type="dapo").clip_high == 0.28
    assert GrpoParams(loss_type="dapo", epsilon_high=0.2).clip_high == 0.2


@pytest.mark.parametrize(
    ("loss_type", "aggregation", "objective"),
    [
        ("grpo", "seq-mean-token-mean", "clip"),
        ("dr_grpo", "seq-mean-token-sum-norm", "clip"),
        ("dapo", "token-mean", "clip"),
        ("bnpo", "token-mean", "clip"),
        ("gspo", "seq-mean-token-mean", "gspo"),
        ("gspo_token", "seq-mean-token-mean", "gspo"),
        ("cispo", "token-mean", "cispo"),
        ("sapo", "seq-mean-token-mean", "sapo"),
    ],
)
def test_loss_type_sets_objective_and_aggregation(loss_type, aggregation, objective) -> None:
    from oumi_megatron.step.update import loss_config

    grpo = GrpoParams(loss_type=loss_type)
    assert grpo.aggregation == aggregation
    cfg = loss_config(grpo)
    assert (cfg.objective, cfg.loss_aggregation) == (objective, aggregation)
    # An explicit aggregation wins (not for gspo: see below).
    if loss_type != "gspo":
        assert GrpoParams(loss_type=loss_type, loss_aggregation="token-sum").aggregation == (
            "token-sum"
        )


def test_gspo_refuses_another_aggregation() -> None:
    assert _error(loss_type="gspo", loss_aggregation="token-mean").startswith(
        "grpo.loss_aggregation 'token-mean' does not apply to grpo.loss_type 'gspo', whose "
        "sequence-level objective is a mean over sequences ('seq-mean-token-mean'). Fix: remove "
        "grpo.loss_aggregation, or use loss_type: gspo_token"
    )


def test_dual_clip_only_for_clipped_objectives() -> None:
    assert GrpoParams(loss_type="grpo", clip_ratio_c=3.0).clip_ratio_c == 3.0
    assert _error(loss_type="cispo", clip_ratio_c=3.0).startswith(
        "grpo.clip_ratio_c applies to the clipped objectives (loss_type grpo, dr_grpo, dapo, "
        "bnpo), not to 'cispo'. Fix: remove grpo.clip_ratio_c."
    )
    assert _error(clip_ratio_c=1.0).startswith(
        "Invalid value for 'grpo.clip_ratio_c': 1.0. Input should be greater than 1"
    )


def test_deprecated_tis_cap_reads_as_rollout_correction() -> None:
    with pytest.warns(FutureWarning, match="truncated_importance_sampling_cap is deprecated"):
        grpo = GrpoParams(truncated_importance_sampling_cap=3.0)
    assert grpo.correction.importance_sampling == "token"
    assert grpo.correction.is_cap == 3.0
    assert _error(
        truncated_importance_sampling_cap=3.0,
        rollout_correction={"importance_sampling": "sequence"},
    ).startswith("grpo.truncated_importance_sampling_cap (deprecated) and")


def test_rollout_correction_bounds() -> None:
    assert _error(rollout_correction={"rejection": "token", "rejection_low": 2.0}).startswith(
        "grpo.rollout_correction.rejection_low (2.0) must be below rejection_high (2.0)"
    )
    assert _error(rollout_correction={"rejection": "tokens"}).startswith(
        "Invalid value for 'grpo.rollout_correction.rejection': 'tokens'. Input should be "
        "'token', 'sequence' or 'geometric'"
    )


def test_kl_estimator_names_of_verl() -> None:
    from oumi_megatron.step.update import loss_config

    assert loss_config(GrpoParams(kl_estimator="low_var_kl+")).kl_estimator == "low_var_kl+"
    assert _error(kl_estimator="k4").startswith("Invalid value for 'grpo.kl_estimator': 'k4'.")


def test_overlong_buffer_longer_than_completions() -> None:
    assert _error(max_completion_length=64, overlong_buffer={"length": 128}).startswith(
        "grpo.overlong_buffer.length (128) exceeds grpo.max_completion_length (64)"
    )

"""DAPO overlong handling: the soft punishment's formula, and its place in the reward."""

import pytest
import torch

from oumi_megatron.algorithms.overlong import is_truncated, overlong_penalty
from oumi_megatron.config import GrpoParams
from oumi_megatron.rewards.registry import resolve_reward_function
from oumi_megatron.step.reward import score_and_advantages
from oumi_megatron.step.rollout import RolloutBatch


@pytest.mark.parametrize(
    ("length", "expected"),
    # L_max = 10, buffer 4: 0 up to 6 tokens, then -(L - 6) / 4 * factor, -factor at 10.
    [(1, 0.0), (6, 0.0), (7, -0.25 * 0.5), (8, -0.5 * 0.5), (10, -1.0 * 0.5)],
)
def test_soft_overlong_punishment(length: int, expected: float) -> None:
    assert overlong_penalty(length, 10, 4, 0.5) == pytest.approx(expected, abs=1e-15)


def test_truncation_is_the_length_finish_reason() -> None:
    assert is_truncated("length") and not is_truncated("stop")


def _batch(lengths: list[int]) -> RolloutBatch:
    n = len(lengths)
    return RolloutBatch(
        sequence_ids=list(range(n)),
        prompt_ids=[[1]] * n,
        completion_ids=[[5] * k for k in lengths],
        rollout_logprobs=[[0.0] * k for k in lengths],
        finish_reasons=["length" if k == 10 else "stop" for k in lengths],
        sample_ids=[f"s/g{i}" for i in range(n)],
        prompts_text=["p"] * n,
        completions_text=["x" * k for k in lengths],
        columns=[{}] * n,
    )


def test_penalty_is_added_before_the_group_advantages() -> None:
    # Reward = characters (= tokens here); group of 4 with lengths 2, 6, 8, 10.
    reward = resolve_reward_function("_reward_helpers:length_reward")
    grpo = GrpoParams(num_generations=4, max_completion_length=10,
                      overlong_buffer={"length": 4, "penalty_factor": 2.0},
                      scale_rewards="none")  # fmt: skip
    scored = score_and_advantages(_batch([2, 6, 8, 10]), [reward], None, grpo, all_reduce=None)
    # Penalties 0, 0, -(2/4) * 2 = -1, -(4/4) * 2 = -2 -> rewards 2, 6, 7, 8; mean 5.75.
    assert scored.overlong_penalties == [0.0, 0.0, -1.0, -2.0]
    assert scored.rewards == [2.0, 6.0, 7.0, 8.0]
    torch.testing.assert_close(
        torch.tensor(scored.advantages), torch.tensor([-3.75, 0.25, 1.25, 2.25])
    )

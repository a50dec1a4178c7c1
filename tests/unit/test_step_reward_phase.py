"""The reward / advantage phase of a step (`step.reward.score_and_advantages`) by hand:
weighted reward functions, group advantages with the group's unbiased std, zero-std groups
counted, the step-wide std for ``scale_rewards: batch`` summed over ranks, and an empty share
still taking part in that collective. Also how the update combines the metrics of several
optimizer steps (`step.update._combine_minibatches`)."""

from __future__ import annotations

import statistics

import pytest
import torch

from oumi_megatron.config import GrpoParams
from oumi_megatron.rewards.registry import resolve_reward_function
from oumi_megatron.step.reward import score_and_advantages
from oumi_megatron.step.rollout import RolloutBatch
from oumi_megatron.step.update import _combine_minibatches


def _batch(texts: list[str]) -> RolloutBatch:
    n = len(texts)
    return RolloutBatch(
        sequence_ids=list(range(n)), prompt_ids=[[1]] * n, completion_ids=[[5]] * n,
        rollout_logprobs=[[0.0]] * n, finish_reasons=["stop"] * n,
        sample_ids=[f"p{i // 4}/g{i % 4}" for i in range(n)], prompts_text=["p"] * n,
        completions_text=texts, columns=[{}] * n,
    )  # fmt: skip


def _by_hand(rewards: list[float], group: int, eps: float, std=None) -> list[float]:
    out = []
    for start in range(0, len(rewards), group):
        chunk = rewards[start : start + group]
        mean = statistics.fmean(chunk)
        scale = statistics.stdev(chunk) if std is None else std
        out += [(r - mean) / (scale + eps) for r in chunk]
    return out


LENGTH = resolve_reward_function("_reward_helpers:length_reward")
TEXTS = ["a", "abc", "abcdef", "ab", "xx", "yy", "zz", "ww"]  # group 2: every reward equal


def test_weighted_rewards_and_group_advantages_by_hand():
    grpo = GrpoParams(num_generations=4, scale_rewards="group")
    scored = score_and_advantages(_batch(TEXTS), [LENGTH, LENGTH], [1.0, 0.5], grpo, None)
    rewards = [1.5 * len(t) for t in TEXTS]
    assert scored.rewards == pytest.approx(rewards, abs=0)
    expected = _by_hand(rewards, 4, grpo.advantage_epsilon)
    torch.testing.assert_close(torch.tensor(scored.advantages), torch.tensor(expected))
    assert scored.advantages[4:] == [0.0] * 4 and scored.num_zero_std_groups == 1


def test_batch_std_is_summed_over_ranks_and_an_empty_share_still_joins():
    """Two ranks' shares: each rank's [n, Σr, Σr²] is summed with the other's."""
    grpo = GrpoParams(num_generations=4, scale_rewards="batch")
    other = torch.tensor([4.0, 10.0, 30.0], dtype=torch.float64)  # rewards 1, 2, 3, 4
    calls = []

    def all_reduce(stats: torch.Tensor) -> None:
        calls.append(stats.clone())
        stats += other

    scored = score_and_advantages(_batch(TEXTS[:4]), [LENGTH], None, grpo, all_reduce)
    everything = [1.0, 3.0, 6.0, 2.0, 1.0, 2.0, 3.0, 4.0]
    expected = _by_hand(everything[:4], 4, grpo.advantage_epsilon, statistics.stdev(everything))
    torch.testing.assert_close(torch.tensor(scored.advantages), torch.tensor(expected))
    empty = score_and_advantages(_batch([]), [LENGTH], None, grpo, all_reduce)
    assert empty.rewards == [] and len(calls) == 2 and calls[1].tolist() == [0.0, 0.0, 0.0]


def test_metrics_of_several_optimizer_steps_combine_by_their_reduction():
    steps = [
        {"loss/policy": 0.2, "ratio/min": 0.9, "ratio/max": 1.1, "grad_norm": 1.0, "lr": 1e-3},
        {"loss/policy": 0.4, "ratio/min": 0.7, "ratio/max": 1.3, "grad_norm": 3.0, "lr": 5e-4},
    ]
    combined = _combine_minibatches(steps)
    assert combined == pytest.approx(
        {"loss/policy": 0.3, "ratio/min": 0.7, "ratio/max": 1.3, "grad_norm": 2.0, "lr": 5e-4}
    )

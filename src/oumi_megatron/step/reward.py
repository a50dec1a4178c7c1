"""Reward and advantages: each replica scores its own completions and normalises its groups.

A replica holds whole prompt groups, so group advantages need nothing from other replicas, and
reward functions run in parallel across replicas. Only the metrics are reduced globally
(`step.metrics`), and, with ``scale_rewards: batch``, three sums for the step's reward std.
DAPO's soft overlong punishment (``grpo.overlong_buffer``) is added to the total reward before
the advantages.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from oumi_megatron.algorithms.advantages import batch_reward_std, compute_group_advantages
from oumi_megatron.algorithms.overlong import overlong_penalty
from oumi_megatron.rewards import score_rollouts
from oumi_megatron.rewards.scoring import RewardResult
from oumi_megatron.step.rollout import RolloutBatch


@dataclass
class ScoredBatch:
    """Rewards and advantages of one replica's completions (empty on ranks that hold none)."""

    rewards: list[float] = field(default_factory=list)
    advantages: list[float] = field(default_factory=list)
    result: RewardResult | None = None
    num_zero_std_groups: int = 0
    overlong_penalties: list[float] = field(default_factory=list)


def group_advantages(rewards: torch.Tensor, grpo, batch_std: float | None = None):
    """``compute_group_advantages`` of contiguous groups with the ``grpo:`` section's settings
    (``batch_std``: the step's reward std for ``scale_rewards: batch``; None: of ``rewards``)."""
    return compute_group_advantages(
        rewards,
        grpo.num_generations,
        estimator=grpo.advantage_estimator,
        scale_rewards=grpo.reward_scaling,
        eps=grpo.advantage_epsilon,
        batch_std=batch_std,
    )


def _overlong_penalties(batch: RolloutBatch, grpo) -> list[float]:
    buffer = grpo.overlong_buffer
    if buffer is None:
        return []
    return [
        overlong_penalty(len(c), grpo.max_completion_length, buffer.length, buffer.penalty_factor)
        for c in batch.completion_ids
    ]


def _world_sum(stats: torch.Tensor) -> None:
    from oumi_megatron.parallel.ranks import all_reduce_host

    all_reduce_host(stats)


def score_and_advantages(
    batch: RolloutBatch, reward_functions, weights, grpo, all_reduce=_world_sum
) -> ScoredBatch:
    """Rewards and advantages of this replica's completions. Collective when
    ``grpo.reward_scaling`` is ``batch`` (every rank calls it, ``all_reduce`` sums in place)."""
    scaling = grpo.reward_scaling
    if len(batch) == 0:
        if scaling == "batch":
            batch_reward_std(torch.zeros(0), all_reduce)
        return ScoredBatch()
    result = score_rollouts(
        reward_functions,
        batch.completions_text,
        sample_ids=batch.sample_ids,
        prompts=batch.prompts_text,
        columns=batch.columns,
        weights=weights,
    )
    rewards = torch.tensor(result.total, dtype=torch.float32)
    penalties = _overlong_penalties(batch, grpo)
    if penalties:
        rewards = rewards + torch.tensor(penalties, dtype=torch.float32)
    batch_std = batch_reward_std(rewards, all_reduce) if scaling == "batch" else None
    groups = group_advantages(rewards, grpo, batch_std)
    zero_std = int(groups.zero_std.sum())
    advantages = groups.advantages.tolist()
    return ScoredBatch(rewards.tolist(), advantages, result, zero_std, penalties)

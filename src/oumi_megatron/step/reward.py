"""Reward and advantages: each replica scores its own completions and normalises its groups.

A replica holds whole prompt groups, so group advantages need nothing from other replicas, and
reward functions run in parallel across replicas. Only the metrics are reduced globally
(`step.metrics`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from oumi_megatron.algorithms.advantages import compute_group_advantages
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


def score_and_advantages(batch: RolloutBatch, reward_functions, weights, grpo) -> ScoredBatch:
    if len(batch) == 0:
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
    groups = compute_group_advantages(
        rewards,
        grpo.num_generations,
        estimator=grpo.advantage_estimator,
        scale_rewards=grpo.normalize_advantages_by_std,
    )
    num_groups = len(batch) // grpo.num_generations
    zero_std = round(float(groups.frac_zero_std) * num_groups)
    return ScoredBatch(rewards.tolist(), groups.advantages.tolist(), result, zero_std)

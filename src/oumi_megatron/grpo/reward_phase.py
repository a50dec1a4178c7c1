"""Reward and advantages: score the completions (engine rank), group-normalise, share."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from oumi_megatron.algorithms.advantages import compute_group_advantages
from oumi_megatron.grpo.rollout_phase import RolloutBatch
from oumi_megatron.rewards import score_rollouts


@dataclass
class ScoredBatch:
    rewards: list[float]
    advantages: list[float]
    metrics: dict[str, float]


def score_and_advantages(batch: RolloutBatch, reward_functions, weights, grpo) -> ScoredBatch:
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
    metrics = result.metrics()
    accuracy_fn = grpo.accuracy_reward or grpo.reward_functions[0]
    correct = [
        value is not None and value >= 1.0 - 1e-6 for value in result.per_function[accuracy_fn]
    ]
    metrics["reward/accuracy"] = sum(correct) / max(len(correct), 1)
    metrics["advantages/frac_zero_std_groups"] = float(groups.frac_zero_std)
    metrics["advantages/abs_mean"] = float(groups.advantages.abs().mean())
    return ScoredBatch(rewards.tolist(), groups.advantages.tolist(), metrics)

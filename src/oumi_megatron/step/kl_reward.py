"""KL in the reward (verl's ``use_kl_in_reward``): ``r_i - coef * sum_t kl(old_t, ref_t)``.

The penalty needs the trainer's log-probs of the behaviour policy (``old``) and of the
reference, which exist only after the exchange, on the last pipeline stage of each
data-parallel rank; the group advantages need every completion of a group, which may train on
other data-parallel ranks. So the update computes, per sequence, the masked sum of the KL
estimate on the ranks that hold its tokens; one world all-reduce of a value per sequence of the
step (and one of the rewards) gives every rank all of them; every rank then recomputes the
step's advantages from the penalised rewards (the same function the replicas use), exactly as
verl's GRPO advantage sums its token-level rewards.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from oumi_megatron.algorithms.kl import kl_penalty
from oumi_megatron.parallel.ranks import all_reduce_host
from oumi_megatron.step.reward import group_advantages
from oumi_megatron.training.metric_reduce import is_loss_owner, is_metric_owner


@dataclass(frozen=True)
class KLRewardSettings:
    grpo: Any  # the grpo: section (kl_in_reward_coef, kl_estimator, advantage settings)
    num_sequences: int  # of the step


def sequence_kl_sums(minibatches, num_sequences: int, estimator: str) -> torch.Tensor:
    """``[num_sequences]`` float64: this rank's part of each sequence's ``sum_t kl`` (zeros
    off the loss owners); summed over the world it is each sequence's whole sum."""
    sums = torch.zeros(num_sequences, dtype=torch.float64)
    if not is_loss_owner():
        return sums
    for mb in minibatches:
        ids = mb.seqs.sequence_ids
        for batch, group in zip(mb.batches, mb.groups, strict=True):
            if not group or "ref_logprobs" not in batch.aux:
                continue
            old = batch.to_rows(batch.aux["old_logprobs"]).detach()
            ref = batch.to_rows(batch.aux["ref_logprobs"]).detach()
            mask = batch.to_rows(batch.loss_mask).bool()
            kl = kl_penalty(old.double(), ref.double(), estimator)  # type: ignore[arg-type]
            per_row = torch.where(mask, kl, torch.zeros((), dtype=kl.dtype)).sum(dim=-1).cpu()
            rows = torch.tensor([ids[local] for local in group])
            sums.index_add_(0, rows, per_row[: len(group)])
    return sums


def step_rewards(seqs, num_sequences: int) -> torch.Tensor:
    """``[num_sequences]``: the rewards of this data-parallel rank's sequences, written once
    per data-parallel rank (sum over the world: every sequence's reward)."""
    values = torch.zeros(num_sequences, dtype=torch.float64)
    if is_metric_owner():
        values[torch.tensor(seqs.sequence_ids)] = torch.tensor(seqs.rewards, dtype=torch.float64)
    return values


def penalised_advantages(minibatches, seqs, s: KLRewardSettings) -> tuple[list[float], dict]:
    """This rank's sequences' advantages from the KL-penalised rewards, and the metrics
    (collective over the world)."""
    coef = s.grpo.kl_in_reward_coef
    kl = all_reduce_host(sequence_kl_sums(minibatches, s.num_sequences, s.grpo.kl_estimator))
    rewards = all_reduce_host(step_rewards(seqs, s.num_sequences))
    # The whole step's rewards: "batch" scaling takes their std.
    groups = group_advantages(rewards - coef * kl, s.grpo)
    advantages = groups.advantages[torch.tensor(seqs.sequence_ids)].tolist()
    metrics = {
        "kl_in_reward/kl_sum_mean": float(kl.mean()),
        "kl_in_reward/penalty_mean": float(coef * kl.mean()),
    }
    return advantages, metrics

"""Update: trainer log-probs of the rollout (old policy, reference), then optimizer steps.

Every rank holds only its data-parallel rank's sequences (`step.exchange`), in training order:
mini-batch k is the rank's k-th slice. It packs (or pads) them into micro-batches; with packing
the data-parallel ranks agree on one micro-batch count (empty micro-batches fill the rest).
Loss normalisers are global: the token and sequence counts of each mini-batch are summed over
the data-parallel group, so the loss does not depend on how the batch is split.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from oumi_megatron.algorithms.aggregation import LossNormalizer, batch_counts
from oumi_megatron.algorithms.grpo import GrpoLossConfig, metric_reduce_op
from oumi_megatron.parallel.ranks import all_reduce_host
from oumi_megatron.training.metric_reduce import (
    all_reduce_metrics,
    is_metric_owner,
    reduce_loss_metrics,
)
from oumi_megatron.training.step_batches import (
    BatchingSettings,
    StepSequences,
    build_batches,
    rank_microbatch_indices,
)

LOSS_METRICS = [
    "loss/policy",
    "loss/kl",
    "kl",
    "clip_frac",
    "clip_frac/low",
    "clip_frac/high",
    "ratio/mean",
    "ratio/min",
    "ratio/max",
    "entropy",
    "mismatch/token_mult_prob_error",
    "mismatch/outside_kept_frac",
    "tis/weight_mean",
    "tis/capped_frac",
]


@dataclass(frozen=True)
class UpdateSettings:
    loss: GrpoLossConfig
    batching: BatchingSettings
    max_completion_length: int
    optimizer_steps: int = 1  # rollouts per step / global batch size
    dp_size: int = 1  # data-parallel ranks (the batching is of this rank's sequences only)


def optimizer_steps_per_grpo_step(cfg, validated) -> int:
    """Rollouts of a step / global batch: one optimizer step per mini-batch (validated whole)."""
    rollouts = validated.prompts_per_step * cfg.grpo.num_generations
    return max(1, rollouts // validated.global_batch_size)


def loss_config(grpo) -> GrpoLossConfig:
    return GrpoLossConfig(
        epsilon=grpo.epsilon,
        epsilon_high=grpo.epsilon_high,
        beta=grpo.beta,
        kl_estimator=grpo.kl_estimator,
        loss_aggregation=grpo.loss_aggregation,
        tis_cap=grpo.truncated_importance_sampling_cap,
    )


def _dp_group():
    from megatron.core import parallel_state

    return parallel_state.get_data_parallel_group()


def local_microbatches(seqs: StepSequences, batching: BatchingSettings):
    """This rank's micro-batches of its own sequences; with packing, every data-parallel rank
    runs as many micro-batches as the one that needs most (Megatron steps them together)."""
    lengths = [len(x) for x in seqs.input_ids]
    groups, plan = rank_microbatch_indices(len(seqs), lengths, batching)
    if batching.packing:
        count = torch.tensor([len(groups)], dtype=torch.float64)
        all_reduce_host(count, op=torch.distributed.ReduceOp.MAX, group=_dp_group())
        groups = groups + [[] for _ in range(int(count.item()) - len(groups))]
    return build_batches(seqs, groups, batching), plan, len(groups)


def _packing_metrics(plan, num_microbatches: int, dp_size: int) -> dict[str, float]:
    """Packing efficiency and balance over every data-parallel rank (one tally per DP rank)."""
    local = {}
    if is_metric_owner():
        tokens = float(sum(plan.stats.tokens_per_rank))
        added = num_microbatches - plan.num_microbatches  # to match the other DP ranks
        empty = float(plan.stats.num_empty_bins + added)
        local = {"tokens": tokens, "tokens_max": tokens, "empty": empty}
    totals = all_reduce_metrics(local, {"tokens": "sum", "tokens_max": "max", "empty": "sum"})
    capacity = num_microbatches * dp_size * plan.stats.max_tokens
    mean = totals["tokens"] / dp_size
    return {
        "packing/num_microbatches": float(num_microbatches),
        "packing/efficiency": totals["tokens"] / capacity if capacity else 0.0,
        "packing/imbalance": totals["tokens_max"] / mean if mean else 1.0,
        "packing/empty_microbatches": totals["empty"],
    }


def _per_sequence(policy, seqs: StepSequences, batching) -> dict[int, torch.Tensor]:
    """Token-aligned trainer log-probs of the sequences this rank computed (last stage)."""
    batches, _, _ = local_microbatches(seqs, batching)
    per_batch = policy.compute_logprobs(batches)
    found: dict[int, torch.Tensor] = {}
    for batch, values in zip(batches, per_batch or [], strict=False):
        found.update(zip(batch.sequence_indices, values, strict=True))
    return found


def _as_aux(found: dict[int, torch.Tensor], seqs: StepSequences) -> list[torch.Tensor]:
    return [found.get(i, torch.zeros(len(x))) for i, x in enumerate(seqs.input_ids)]


def max_rollout_mismatch(found: dict[int, torch.Tensor], seqs: StepSequences) -> float:
    """max |logp_trainer - logp_rollout| over completion tokens, across all ranks.

    Tokens outside the trainer's top-k/top-p set (log-prob -inf) are counted by
    `mismatch/outside_kept_frac` instead.
    """
    worst = torch.zeros(1, dtype=torch.float64)
    for i, trainer in found.items():
        mask = seqs.loss_masks[i].bool() & ~torch.isneginf(trainer)
        rollout = torch.as_tensor(seqs.aux["rollout_logprobs"][i])
        if mask.any():
            worst[0] = max(worst[0].item(), (trainer - rollout)[mask].abs().max().item())
    return all_reduce_host(worst, op=torch.distributed.ReduceOp.MAX).item()


def run_update(policy, reference, seqs: StepSequences, settings: UpdateSettings) -> dict:
    """Old (and reference) log-probs, then one optimizer step; metrics are global."""
    old = _per_sequence(policy, seqs, settings.batching)
    mismatch = max_rollout_mismatch(old, seqs)
    seqs = seqs.with_aux("old_logprobs", _as_aux(old, seqs))
    if reference is not None:
        ref = _per_sequence(reference, seqs, settings.batching)
        seqs = seqs.with_aux("ref_logprobs", _as_aux(ref, seqs))
    per_step = len(seqs) // settings.optimizer_steps
    steps = [
        _optimizer_step(policy, reference, seqs.subset(k * per_step, (k + 1) * per_step), settings)
        for k in range(settings.optimizer_steps)
    ]
    metrics = _combine_minibatches(steps)
    metrics["mismatch/max_abs_logprob_diff"] = mismatch
    return metrics


def _combine_minibatches(steps: list[dict]) -> dict:
    """Min/max metrics by their reduction; the rest, each normalised over its own mini-batch,
    averaged; the learning rate is the last one."""
    combined = {}
    for key in steps[0]:
        values = [m[key] for m in steps]
        op = metric_reduce_op(key)
        combined[key] = (
            min(values)
            if op == "min"
            else max(values)
            if op == "max"
            else (sum(values) / len(values))
        )
    combined["lr"] = steps[-1]["lr"]
    return combined


def global_normalizer(seqs: StepSequences, settings: UpdateSettings) -> LossNormalizer:
    """Token and sequence counts of the mini-batch over every data-parallel rank."""
    masks = torch.nn.utils.rnn.pad_sequence(seqs.loss_masks, batch_first=True)
    counts = batch_counts(masks).to(torch.float64)
    all_reduce_host(counts, group=_dp_group())
    num_tokens, num_seqs = (int(v) for v in counts.tolist())
    return LossNormalizer.from_counts(
        settings.loss.loss_aggregation, num_tokens, num_seqs, max_len=settings.max_completion_length
    )


def _optimizer_step(policy, reference, seqs: StepSequences, settings: UpdateSettings) -> dict:
    batches, plan, count = local_microbatches(seqs, settings.batching)
    norm = global_normalizer(seqs, settings)
    out = policy.train_step(batches, settings.loss, norm)
    names = [n for n in LOSS_METRICS if _metric_applies(n, settings.loss, policy, reference)]
    metrics = reduce_loss_metrics(out["microbatch_metrics"], names)
    metrics["grad_norm"] = out["grad_norm"]
    metrics["lr"] = out["lr"]
    metrics["microbatches_per_rank"] = len(batches)
    if plan is not None:
        metrics.update(_packing_metrics(plan, count, settings.dp_size))
    return metrics


def _metric_applies(name: str, loss: GrpoLossConfig, policy, reference) -> bool:
    if name in ("kl",):
        return reference is not None
    if name == "mismatch/outside_kept_frac":
        return policy.truncates
    if name == "loss/kl":
        return loss.beta > 0
    if name.startswith("tis/"):
        return loss.tis_cap is not None
    return True

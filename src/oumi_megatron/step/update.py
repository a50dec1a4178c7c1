"""Update: trainer log-probs of the rollout (old policy, reference), then optimizer steps.

Every rank holds only its data-parallel rank's sequences (`step.exchange`), in training order:
mini-batch k is the rank's k-th slice. It packs (or pads) them into micro-batches once per
step, on the device; with packing the data-parallel ranks agree on one micro-batch count (empty
micro-batches fill the rest). Old and reference log-probs are attached to those micro-batches
where they are computed, and per-micro-batch metrics stay on the device until the step ends.
Loss normalisers are global: the token and sequence counts of each mini-batch are summed over
the data-parallel group, so the loss does not depend on how the batch is split.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from oumi_megatron.algorithms.aggregation import LossNormalizer
from oumi_megatron.algorithms.grpo import GrpoLossConfig, metric_reduce_op
from oumi_megatron.algorithms.logprobs import ROLLOUT_GAP, max_logprob_gap
from oumi_megatron.algorithms.loss_types import LOSS_TYPES
from oumi_megatron.algorithms.policy_loss import ObjectiveParams
from oumi_megatron.algorithms.rollout_correction import RolloutCorrection
from oumi_megatron.data.context_parallel import shard_for_context_parallel
from oumi_megatron.parallel.ranks import all_reduce_host
from oumi_megatron.step.kl_reward import KLRewardSettings, penalised_advantages
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
    "clip_frac/dual",
    "rollout_correction/weight_mean",
    "rollout_correction/capped_token_frac",
    "rollout_correction/capped_seq_frac",
    "rollout_correction/rejected_token_frac",
    "rollout_correction/rejected_seq_frac",
]


@dataclass(frozen=True)
class UpdateSettings:
    loss: GrpoLossConfig
    batching: BatchingSettings
    loss_scale_factor: float  # seq-mean-token-sum-norm's constant
    optimizer_steps: int = 1  # rollouts per step / global batch size
    dp_size: int = 1  # data-parallel ranks (the batching is of this rank's sequences only)
    kl_reward: KLRewardSettings | None = None  # grpo.kl_in_reward_coef > 0


def optimizer_steps_per_grpo_step(cfg, validated) -> int:
    """Rollouts of a step / global batch: one optimizer step per mini-batch (validated whole)."""
    rollouts = validated.prompts_per_step * cfg.grpo.num_generations
    return max(1, rollouts // validated.global_batch_size)


def loss_config(grpo) -> GrpoLossConfig:
    """The loss of the ``grpo:`` section, its loss type resolved (``algorithms/loss_types``)."""
    c = grpo.correction
    return GrpoLossConfig(
        objective=LOSS_TYPES[grpo.loss_type].objective,
        params=ObjectiveParams(
            epsilon=grpo.epsilon,
            epsilon_high=grpo.clip_high,
            clip_ratio_c=grpo.clip_ratio_c,
            tau_pos=grpo.sapo_temperature_pos,
            tau_neg=grpo.sapo_temperature_neg,
        ),
        beta=grpo.beta,
        kl_estimator=grpo.kl_estimator,
        loss_aggregation=grpo.aggregation,
        correction=RolloutCorrection(
            # Off-policy steps need the correction against the behaviour policy.
            c.importance_sampling or ("token" if grpo.max_off_policy_steps else None),
            c.is_cap,
            c.rejection,
            c.rejection_low,
            c.rejection_high,
        ),
    )


def kl_reward_settings(grpo, num_sequences: int) -> KLRewardSettings | None:
    """grpo.kl_in_reward_coef's settings, or None when it is off."""
    if grpo.kl_in_reward_coef <= 0:
        return None
    return KLRewardSettings(grpo, num_sequences)


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
    return build_batches(seqs, groups, batching), plan, groups


def _agreed_shapes(seqs: StepSequences, batching: BatchingSettings) -> BatchingSettings:
    """Fixed-shape micro-batches (interleaved pipeline, all-gather expert dispatch) get one row
    length for the whole step on every data-parallel rank."""
    if not batching.fixed_shape:
        return batching
    longest = max((len(x) for x in seqs.input_ids), default=1)
    longest = torch.tensor([float(longest)], dtype=torch.float64)
    all_reduce_host(longest, op=torch.distributed.ReduceOp.MAX, group=_dp_group())
    return replace(batching, pad_length=int(longest.item()))


@dataclass
class MiniBatch:
    """One optimizer step's micro-batches of this rank, built once per GRPO step."""

    seqs: StepSequences
    batches: list
    plan: object
    groups: list[list[int]]  # each micro-batch's sequences (indices into seqs)

    @property
    def count(self) -> int:
        """Micro-batches, equal on every data-parallel rank."""
        return len(self.groups)


def build_minibatches(seqs: StepSequences, settings: UpdateSettings, device) -> list[MiniBatch]:
    batching = _agreed_shapes(seqs, settings.batching)
    per_step = len(seqs) // settings.optimizer_steps
    minibatches = []
    for k in range(settings.optimizer_steps):
        part = seqs.subset(k * per_step, (k + 1) * per_step)
        batches, plan, groups = local_microbatches(part, batching)
        batches = [_context_parallel_share(b).to(device) for b in batches]
        minibatches.append(MiniBatch(part, batches, plan, groups))
    return minibatches


def _context_parallel_share(batch):
    from megatron.core import parallel_state

    size = parallel_state.get_context_parallel_world_size()
    if size == 1:
        return batch
    rank = parallel_state.get_context_parallel_rank()
    return shard_for_context_parallel(batch, rank, size)


def _attach_logprobs(policy, minibatches: list[MiniBatch], key: str) -> None:
    """One forward pass over the whole step's micro-batches; the log-probs stay on the device,
    in the micro-batches' own layout."""
    flat = policy.with_logprobs([b for mb in minibatches for b in mb.batches], key)
    for mb in minibatches:
        mb.batches, flat = flat[: len(mb.batches)], flat[len(mb.batches) :]


def _rollout_gap(minibatches: list[MiniBatch]) -> float:
    """max |old-policy log-prob - engine log-prob| over this rank's completion tokens, over
    every rank (0 where a rank has none)."""
    gaps = [
        max_logprob_gap(b.aux["old_logprobs"], b.aux["rollout_logprobs"], b.loss_mask)
        for mb in minibatches
        for b in mb.batches
        if "old_logprobs" in b.aux
    ]
    local = torch.stack(gaps).amax().item() if gaps else 0.0
    worst = torch.tensor([max(local, 0.0)], dtype=torch.float64)
    return all_reduce_host(worst, op=torch.distributed.ReduceOp.MAX).item()


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


def run_update(policy, reference, seqs: StepSequences, settings: UpdateSettings) -> dict:
    """Old (and reference) log-probs, then the optimizer steps; metrics are global.

    With one optimizer step per GRPO step the old policy is the one being trained: its
    log-probs come from the training forward pass itself (the ratio is 1 by construction),
    so no separate forward pass is run for them.
    """
    minibatches = build_minibatches(seqs, settings, policy.device)
    # The KL in the reward needs the old policy's log-probs before the first optimizer step.
    on_policy = settings.optimizer_steps == 1 and settings.kl_reward is None
    if not on_policy:
        _attach_logprobs(policy, minibatches, "old_logprobs")
    if reference is not None:
        _attach_logprobs(reference, minibatches, "ref_logprobs")
    penalty = {}
    if settings.kl_reward is not None:
        advantages, penalty = penalised_advantages(minibatches, seqs, settings.kl_reward)
        minibatches = _rebuilt(seqs.with_aux("advantages", advantages), minibatches, settings,
                               policy.device)  # fmt: skip
    gap = None if on_policy else _rollout_gap(minibatches)
    steps = [_optimizer_step(policy, reference, mb, settings, on_policy) for mb in minibatches]
    metrics = _combine_minibatches(steps)
    metrics.update(penalty)
    gap = metrics.pop(ROLLOUT_GAP, None) if on_policy else gap
    metrics["mismatch/max_abs_logprob_diff"] = max(gap, 0.0)
    return metrics


def _rebuilt(seqs: StepSequences, before: list[MiniBatch], settings, device) -> list[MiniBatch]:
    """The same micro-batches with new advantages, keeping the log-probs already computed
    (the layout is a function of the sequences' lengths, so it is the same)."""
    after = build_minibatches(seqs, settings, device)
    for old, new in zip(before, after, strict=True):
        new.batches = [
            _copy_aux(b, a, ("old_logprobs", "ref_logprobs"))
            for b, a in zip(old.batches, new.batches, strict=True)
        ]
    return after


def _copy_aux(source, target, keys):
    for key in keys:
        if key in source.aux:
            target = target.with_aux(key, source.aux[key])
    return target


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
    """Loss tokens and sequences (fully masked ones too) of the mini-batch over every
    data-parallel rank."""
    tokens = float(sum(int(m.sum()) for m in seqs.loss_masks))
    counts = torch.tensor([tokens, float(len(seqs))], dtype=torch.float64)
    all_reduce_host(counts, group=_dp_group())
    num_tokens, num_seqs = (int(v) for v in counts.tolist())
    return LossNormalizer.from_counts(
        settings.loss.loss_aggregation, num_tokens, num_seqs, settings.loss_scale_factor
    )


def _optimizer_step(policy, reference, mb: MiniBatch, settings: UpdateSettings, on_policy):
    norm = global_normalizer(mb.seqs, settings)
    out = policy.train_step(mb.batches, settings.loss, norm)
    names = [n for n in LOSS_METRICS if _metric_applies(n, settings.loss, policy, reference)]
    names += [ROLLOUT_GAP] if on_policy else []
    metrics = reduce_loss_metrics(out["microbatch_metrics"], names)
    metrics.update(out.get("moe", {}))
    metrics["grad_norm"] = out["grad_norm"]
    metrics["lr"] = out["lr"]
    metrics["microbatches_per_rank"] = len(mb.batches)
    if mb.plan is not None:
        metrics.update(_packing_metrics(mb.plan, mb.count, settings.dp_size))
    return metrics


def _metric_applies(name: str, loss: GrpoLossConfig, policy, reference) -> bool:
    if name in ("kl",):
        return reference is not None
    if name == "mismatch/outside_kept_frac":
        return policy.truncates
    if name == "loss/kl":
        return loss.beta > 0
    if name == "clip_frac/dual":
        return loss.params.clip_ratio_c is not None
    if name.startswith("rollout_correction/capped"):
        return loss.correction.importance_sampling is not None
    if name.startswith("rollout_correction/rejected"):
        return loss.correction.rejection is not None
    if name.startswith("rollout_correction/"):
        return loss.correction.active
    return True

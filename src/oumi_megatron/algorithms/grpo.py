"""The loss of one micro-batch: policy objective x rollout correction + KL (pure torch)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

import torch

from oumi_megatron.algorithms.aggregation import (
    AGGREGATION_MODES,
    AggregationMode,
    LossNormalizer,
    aggregate_loss,
)
from oumi_megatron.algorithms.kl import (
    KL_ESTIMATORS,
    KLEstimator,
    canonical_kl_estimator,
    kl_penalty,
)
from oumi_megatron.algorithms.policy_loss import (
    POLICY_OBJECTIVES,
    ObjectiveParams,
    PolicyObjective,
    policy_objective,
)
from oumi_megatron.algorithms.rollout_correction import (
    RolloutCorrection,
    correction_weights,
    within_row,
)

ReduceOp = Literal["sum", "min", "max"]


@dataclass(frozen=True)
class GrpoLossConfig:
    """Hyper-parameters of :func:`grpo_loss` (``grpo.loss_type`` resolved, see ``loss_types``).

    Attributes:
        objective: per-token policy objective (``policy_loss.policy_objective``).
        params: its clip ranges, dual-clip constant and SAPO temperatures.
        beta: KL coefficient; 0 disables the KL loss term.
        kl_estimator: see ``kl.kl_penalty``.
        loss_aggregation: see :func:`aggregate_loss`.
        correction: rollout correction (truncated / masked importance sampling).
    """

    objective: PolicyObjective = "clip"
    params: ObjectiveParams = ObjectiveParams()
    beta: float = 0.0
    kl_estimator: KLEstimator = "k3"
    loss_aggregation: AggregationMode = "token-mean"
    correction: RolloutCorrection = RolloutCorrection()

    def __post_init__(self) -> None:
        p = self.params
        if self.objective not in POLICY_OBJECTIVES:
            raise ValueError(f"objective must be one of {POLICY_OBJECTIVES}")
        if not 0.0 <= p.epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {p.epsilon}")
        if p.epsilon_high is not None and p.epsilon_high < 0.0:
            raise ValueError(f"epsilon_high must be >= 0, got {p.epsilon_high}")
        if p.clip_ratio_c is not None and p.clip_ratio_c <= 1.0:
            raise ValueError(f"clip_ratio_c must be > 1, got {p.clip_ratio_c}")
        if self.beta < 0.0:
            raise ValueError(f"beta must be >= 0, got {self.beta}")
        if canonical_kl_estimator(self.kl_estimator) not in KL_ESTIMATORS:
            raise ValueError(f"kl_estimator must be one of {KL_ESTIMATORS}")
        if self.loss_aggregation not in AGGREGATION_MODES:
            raise ValueError(f"loss_aggregation must be one of {AGGREGATION_MODES}")


def metric_reduce_op(name: str) -> ReduceOp:
    """How a :func:`grpo_loss` metric combines across micro-batches and DP ranks.

    Keys ending in ``/min`` reduce with min, ``/max`` with max, all others with sum
    (they are contributions already divided by the global normaliser).
    """
    if name.endswith("/min"):
        return "min"
    if name.endswith("/max"):
        return "max"
    return "sum"


def combine_metrics(metrics: Iterable[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Combine per-micro-batch metric dicts locally (use the same ops for DP all-reduce)."""
    out: dict[str, torch.Tensor] = {}
    for m in metrics:
        for k, v in m.items():
            if k not in out:
                out[k] = v.clone()
                continue
            op = metric_reduce_op(k)
            if op == "sum":
                out[k] = out[k] + v
            elif op == "min":
                out[k] = torch.minimum(out[k], v)
            else:
                out[k] = torch.maximum(out[k], v)
    return out


def grpo_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    cfg: GrpoLossConfig,
    norm: LossNormalizer,
    ref_logprobs: torch.Tensor | None = None,
    rollout_logprobs: torch.Tensor | None = None,
    kl_logprobs: torch.Tensor | None = None,
    seq_num_tokens: torch.Tensor | None = None,
    seq_sum: Callable[[torch.Tensor], torch.Tensor] = within_row,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Loss contribution of one micro-batch and its metrics.

    Per token: ``l = w * policy_term + beta * kl`` with ``w`` the rollout-correction weight
    (1 without correction), then aggregated with ``norm`` (summing over all micro-batches/DP
    ranks = full-batch loss).

    Args:
        logprobs: [B, T] current policy log-probs of the sampled tokens (with grad).
        old_logprobs: [B, T] trainer log-probs of the sampling policy; None = on-policy
            (``logprobs.detach()``).
        advantages: [B] per sequence, or [B, T].
        mask: [B, T], 1 for completion tokens.
        ref_logprobs: [B, T] reference log-probs; required when ``cfg.beta > 0``.
        rollout_logprobs: [B, T] log-probs reported by the rollout engine; required by the
            rollout correction, and enables the mismatch metrics.
        kl_logprobs: [B, T] current log-probs (with grad) for the KL term, when they are of
            another distribution than ``logprobs``: with top-k/top-p sampling the surrogate
            uses the truncated distribution, the KL the full one. None = ``logprobs``.
        seq_num_tokens: [B] each sequence's whole count of loss tokens when the rows hold
            only part of it (context parallelism); None = the row sums of ``mask``.
        seq_sum: sums a per-row partial [B] over the ranks holding parts of each sequence
            (context parallelism; identity otherwise). Used by sequence-level ratios.

    A token whose current or old log-prob is -inf (it was sampled, but lies outside the
    trainer's top-k/top-p set: the engine's logits differ slightly) is left out of every term
    and metric: zero loss, zero gradient. It still counts in the normalisers, so no other
    token's weight changes; ``mismatch/outside_kept_frac`` counts such tokens.

    Returns:
        ``(loss, metrics)``; all metrics are detached scalars that reduce per
        :func:`metric_reduce_op`: token means (``clip_frac*``, ``ratio/mean``, ``kl``,
        ``rollout_correction/*_token_frac``, ``mismatch/*``) are divided by
        ``norm.num_tokens``, sequence fractions by ``norm.num_seqs``; ``loss/*`` use the
        loss aggregation; ``ratio/min`` / ``ratio/max`` are +inf / -inf on empty masks.
    """
    if cfg.loss_aggregation != norm.mode:
        raise ValueError(
            f"cfg.loss_aggregation={cfg.loss_aggregation!r} != norm.mode={norm.mode!r}"
        )
    if cfg.beta > 0 and ref_logprobs is None:
        raise ValueError("beta > 0 needs ref_logprobs")
    if cfg.correction.active and rollout_logprobs is None:
        raise ValueError("rollout correction needs rollout_logprobs")

    given = mask.bool()
    # Only -inf (a token outside the top-k/top-p set) is left out: NaN must still fail loudly.
    kept = ~torch.isneginf(logprobs.detach())
    if old_logprobs is not None:
        kept &= ~torch.isneginf(old_logprobs.detach())
    m = given & kept
    # At least fp32 maths: bf16 ratios are too coarse (1 ulp at 1.0 is 0.0078).
    dtype = torch.promote_types(logprobs.dtype, torch.float32)
    zero = torch.zeros((), dtype=dtype, device=logprobs.device)

    def clean(x: torch.Tensor) -> torch.Tensor:
        # Pad positions may hold garbage (NaN/inf): select them away up front so neither the
        # forward nor the backward pass can see them.
        return torch.where(m, x.to(dtype), zero)

    logp = clean(logprobs)
    old = logp.detach() if old_logprobs is None else clean(old_logprobs.detach())
    adv = advantages.detach()
    if adv.dim() == 1:
        adv = adv.unsqueeze(-1).expand_as(m)
    adv = clean(adv)
    # Sequence lengths from the given mask: a left-out token does not reweight its row.
    counts = given.sum(dim=-1) if seq_num_tokens is None else seq_num_tokens

    seq_log_ratio = None
    if cfg.objective == "gspo":
        seq_log_ratio = seq_sum((logp.detach() - old).sum(dim=-1)) / counts.clamp(min=1).to(dtype)
    terms = policy_objective(cfg.objective, logp, old, adv, cfg.params, seq_log_ratio)
    pg_tok = terms.loss
    metrics: dict[str, torch.Tensor] = {}

    def token_mean(x: torch.Tensor, mask: torch.Tensor = m) -> torch.Tensor:
        return aggregate_loss(x.detach().to(dtype), mask, norm, mode="token-mean")

    def seq_frac(touched: torch.Tensor) -> torch.Tensor:
        # A row's share of its sequence (1 unless context parallelism split it), so the ranks
        # holding parts of one sequence count it once between them.
        hit = seq_sum(touched.sum(dim=-1).to(dtype)) > 0
        share = given.sum(dim=-1).to(dtype) / counts.clamp(min=1).to(dtype)
        return (hit.to(dtype) * share).sum() / max(norm.num_seqs, 1)

    def aggregate(x: torch.Tensor) -> torch.Tensor:
        return aggregate_loss(x, m, norm, seq_num_tokens=counts)

    if rollout_logprobs is not None:
        rollout = clean(rollout_logprobs.detach())
        # Same quantity as token_mult_prob_error(), but as a split-invariant contribution.
        metrics["mismatch/token_mult_prob_error"] = token_mean(torch.exp((old - rollout).abs()))
        metrics["mismatch/outside_kept_frac"] = token_mean(~kept, given)
        if cfg.correction.active:
            fix = correction_weights(old, rollout, m, cfg.correction, counts, seq_sum)
            pg_tok = pg_tok * fix.weight
            metrics["rollout_correction/weight_mean"] = token_mean(fix.weight)
            if cfg.correction.importance_sampling is not None:
                metrics["rollout_correction/capped_token_frac"] = token_mean(fix.capped)
                metrics["rollout_correction/capped_seq_frac"] = seq_frac(fix.capped)
            if cfg.correction.rejection is not None:
                metrics["rollout_correction/rejected_token_frac"] = token_mean(fix.rejected)
                metrics["rollout_correction/rejected_seq_frac"] = seq_frac(fix.rejected)

    token_loss = pg_tok
    metrics["loss/policy"] = aggregate(pg_tok.detach())
    if ref_logprobs is not None:
        kl_logp = logp if kl_logprobs is None else clean(kl_logprobs)
        kl_tok = kl_penalty(kl_logp, clean(ref_logprobs.detach()), cfg.kl_estimator)
        metrics["kl"] = token_mean(kl_tok)
        if cfg.beta > 0:
            token_loss = token_loss + cfg.beta * kl_tok
            metrics["loss/kl"] = aggregate(cfg.beta * kl_tok.detach())

    loss = aggregate(token_loss)

    ratio = terms.ratio
    # A fill kernel, not a host copy: the loss runs between queued kernels (no stall).
    inf = torch.full((), float("inf"), dtype=dtype, device=ratio.device)
    metrics["clip_frac"] = token_mean(terms.clipped)
    metrics["clip_frac/low"] = token_mean(terms.clipped_low)
    metrics["clip_frac/high"] = token_mean(terms.clipped_high)
    if cfg.params.clip_ratio_c is not None:
        metrics["clip_frac/dual"] = token_mean(terms.dual_clipped)
    metrics["ratio/mean"] = token_mean(ratio)
    # Identity elements on empty masks so min/max reduction across ranks stays exact.
    metrics["ratio/min"] = torch.where(m, ratio, inf).amin() if m.numel() else inf
    metrics["ratio/max"] = torch.where(m, ratio, -inf).amax() if m.numel() else -inf
    return loss, metrics

"""Rollout correction: the rollout engine's numerics versus the trainer's (pure torch).

The engine (vLLM, or an async generator a step behind) samples from ``pi_rollout``; the loss's
old policy is the trainer's ``pi_old``. Per token, ``rho_t = pi_old / pi_rollout`` =
``exp(clamp(old_t - rollout_t, -20, 20))`` (detached). Two corrections, combinable:

* **Truncated importance sampling** (TIS; Yao et al. 2025, "Your efficient RL framework
  secretly brings you off-policy RL training"): the policy-gradient term of each token is
  multiplied by ``min(w, cap)``, with ``w = rho_t`` (``token``) or the sequence's product
  ``exp(clamp(sum_t log rho_t, -20, 20))`` (``sequence``), as verl's ``rollout_is``.
* **Masked importance sampling / rejection** (IcePop, Ling team 2025; TRL's ``*_mask`` modes;
  NeMo-RL's ``icepop`` / ``seq-mask-tis``): a token (``token``), or a whole sequence, whose
  ratio leaves ``[low, high]`` gets weight 0. ``sequence`` tests the product of its token
  ratios, ``geometric`` their geometric mean ``exp(mean_t log rho_t)``. Rejected tokens stay in
  the loss normaliser (as in IcePop, TRL and NeMo-RL; verl's ``rollout_rs`` instead removes
  them from the mask), so the other tokens' weights do not depend on how many were rejected.

Only the policy-gradient term is reweighted, not the KL term (as verl, TRL and NeMo-RL do).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from oumi_megatron.algorithms.policy_loss import LOG_RATIO_CLAMP

ISLevel = Literal["token", "sequence"]
RejectionLevel = Literal["token", "sequence", "geometric"]


@dataclass(frozen=True)
class RolloutCorrection:
    """Settings (``grpo.rollout_correction``); both parts off by default.

    Attributes:
        importance_sampling: ``token`` or ``sequence`` truncated IS weights; None: off.
        is_cap: the truncation: weights above it are set to it.
        rejection: ``token``, ``sequence`` or ``geometric`` masking; None: off.
        rejection_low: lower bound of the accepted ratio.
        rejection_high: upper bound of the accepted ratio.
    """

    importance_sampling: ISLevel | None = None
    is_cap: float = 2.0
    rejection: RejectionLevel | None = None
    rejection_low: float = 0.5
    rejection_high: float = 2.0

    def __post_init__(self) -> None:
        if self.is_cap <= 0:
            raise ValueError(f"is_cap must be > 0, got {self.is_cap}")
        if not 0 <= self.rejection_low < self.rejection_high:
            raise ValueError(
                f"need 0 <= rejection_low < rejection_high, got {self.rejection_low}, "
                f"{self.rejection_high}"
            )

    @property
    def active(self) -> bool:
        return self.importance_sampling is not None or self.rejection is not None


@dataclass(frozen=True)
class Correction:
    """Per-token weight [B, T] (detached) and what it touched.

    Attributes:
        weight: multiplies each token's policy-gradient loss.
        capped: [B, T] tokens whose IS weight was truncated.
        rejected: [B, T] tokens given weight 0 by rejection.
    """

    weight: torch.Tensor
    capped: torch.Tensor
    rejected: torch.Tensor


def within_row(per_row: torch.Tensor) -> torch.Tensor:
    """The ``seq_sum`` of rows that hold whole sequences: nothing to add."""
    return per_row


def correction_weights(
    old_logprobs: torch.Tensor,
    rollout_logprobs: torch.Tensor,
    mask: torch.Tensor,
    cfg: RolloutCorrection,
    seq_num_tokens: torch.Tensor | None = None,
    seq_sum: Callable[[torch.Tensor], torch.Tensor] = within_row,
) -> Correction:
    """Weights of the policy-gradient term for one micro-batch [B, T].

    Args:
        mask: completion tokens; weights outside it are 1 and never count as touched.
        seq_num_tokens: [B] whole-sequence token counts (context parallelism); None: row sums.
        seq_sum: sums a per-row partial [B] over the ranks that hold parts of each sequence
            (context parallelism); identity otherwise.
    """
    m = mask.bool()
    zero = torch.zeros((), dtype=old_logprobs.dtype, device=old_logprobs.device)
    log_rho = torch.where(m, old_logprobs.detach() - rollout_logprobs.detach(), zero)
    log_rho = log_rho.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    needs_sum = cfg.importance_sampling == "sequence" or cfg.rejection in ("sequence", "geometric")
    seq_log = seq_sum(log_rho.sum(dim=-1)) if needs_sum else None

    weight = torch.ones_like(log_rho)
    capped = torch.zeros_like(m)
    if cfg.importance_sampling is not None:
        if cfg.importance_sampling == "token":
            w = torch.exp(log_rho)
        else:
            w = torch.exp(seq_log.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)).unsqueeze(-1)
            w = w.expand_as(log_rho)
        capped = (w > cfg.is_cap) & m
        weight = w.clamp(max=cfg.is_cap)

    rejected = torch.zeros_like(m)
    if cfg.rejection is not None:
        if cfg.rejection == "token":
            stat = log_rho
        elif cfg.rejection == "sequence":
            stat = seq_log.unsqueeze(-1).expand_as(log_rho)
        else:
            n = m.sum(dim=-1) if seq_num_tokens is None else seq_num_tokens
            stat = (seq_log / n.clamp(min=1).to(seq_log.dtype)).unsqueeze(-1).expand_as(log_rho)
        rho = torch.exp(stat.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))
        rejected = ((rho < cfg.rejection_low) | (rho > cfg.rejection_high)) & m
        weight = torch.where(rejected, torch.zeros_like(weight), weight)
    weight = torch.where(m, weight, torch.ones_like(weight))
    return Correction(weight.detach(), capped, rejected)

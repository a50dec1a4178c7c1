"""Split-invariant loss aggregation over completion tokens (pure torch).

Every function here returns a micro-batch *contribution*: ``sum(...) / global_normaliser``.
The normalisers are fixed once per optimizer step for the whole global batch, so summing
the contributions of all micro-batches on all data-parallel ranks gives exactly the
full-batch value, however the batch was split.

The modes are verl's ``agg_loss`` modes (``verl/trainer/ppo/core_algos.py``, with its global
batch information: ``batch_num_tokens`` = N, ``global_batch_size`` = S and
``loss_scale_factor`` = C below). Like verl, S counts every sequence of the mini-batch, also
one whose tokens are all masked out (an overlong-filtered completion), and N only the tokens
left in the mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

AggregationMode = Literal[
    "token-mean",
    "token-sum",
    "seq-mean-token-sum",
    "seq-mean-token-mean",
    "seq-mean-token-sum-norm",
]
AGGREGATION_MODES: tuple[str, ...] = (
    "token-mean",
    "token-sum",
    "seq-mean-token-sum",
    "seq-mean-token-mean",
    "seq-mean-token-sum-norm",
)


def batch_counts(mask: torch.Tensor) -> torch.Tensor:
    """Return ``[num_tokens, num_seqs]`` (int64) of a (local) batch mask [B, T].

    ``num_seqs`` counts rows with at least one completion token (all-zero padding rows of a
    micro-batch are ignored). For a step's normaliser, count the step's sequences instead
    (:class:`LossNormalizer`'s ``num_seqs`` includes fully masked sequences).
    """
    m = mask.bool()
    return torch.stack([m.sum(), m.any(dim=-1).sum()]).to(torch.int64)


@dataclass(frozen=True)
class LossNormalizer:
    """Global normalisers of one optimizer step.

    Attributes:
        mode: aggregation mode used by :func:`aggregate_loss` by default.
        num_tokens: completion tokens left in the loss mask, over the global batch (all
            micro-batches, all DP ranks).
        num_seqs: sequences in the global batch, fully masked ones included.
        scale_factor: the constant C of ``seq-mean-token-sum-norm`` (verl's
            ``loss_scale_factor``; Dr. GRPO's max completion length); required for that mode.
    """

    mode: AggregationMode
    num_tokens: int
    num_seqs: int
    scale_factor: float | None = None

    def __post_init__(self) -> None:
        if self.mode not in AGGREGATION_MODES:
            raise ValueError(
                f"unknown aggregation mode {self.mode!r}; expected {AGGREGATION_MODES}"
            )
        if self.num_tokens < 0 or self.num_seqs < 0:
            raise ValueError("num_tokens and num_seqs must be >= 0")
        if self.mode == "seq-mean-token-sum-norm" and (
            self.scale_factor is None or self.scale_factor <= 0
        ):
            raise ValueError("seq-mean-token-sum-norm needs a constant scale_factor > 0")

    @classmethod
    def from_counts(
        cls,
        mode: AggregationMode,
        num_tokens: int,
        num_seqs: int,
        scale_factor: float | None = None,
    ) -> LossNormalizer:
        """Build from already-reduced global counts (e.g. all-reduced :func:`batch_counts`)."""
        return cls(mode, int(num_tokens), int(num_seqs), scale_factor)

    @classmethod
    def from_global_batch(
        cls, mask: torch.Tensor, mode: AggregationMode, scale_factor: float | None = None
    ) -> LossNormalizer:
        """Build from the mask [B, T] of the whole global batch (single-process case): every
        row is a sequence."""
        return cls.from_counts(mode, int(mask.bool().sum()), mask.shape[0], scale_factor)


def aggregate_loss(
    token_loss: torch.Tensor,
    mask: torch.Tensor,
    norm: LossNormalizer,
    mode: AggregationMode | None = None,
    seq_num_tokens: torch.Tensor | None = None,
) -> torch.Tensor:
    """Contribution of one micro-batch [B, T] to the global aggregated loss.

    Modes (``l`` token loss, ``m`` mask, ``N`` = norm.num_tokens, ``S`` = norm.num_seqs,
    ``C`` = norm.scale_factor, ``n_i = sum_t m_it``):
      * token-mean:              sum_it l_it m_it / N                  (DAPO; verl's default)
      * token-sum:               sum_it l_it m_it
      * seq-mean-token-sum:      sum_i (sum_t l_it m_it) / S
      * seq-mean-token-mean:     sum_i (sum_t l_it m_it / n_i) / S      (GRPO paper)
      * seq-mean-token-sum-norm: sum_i (sum_t l_it m_it) / (S * C)      (Dr. GRPO)

    Args:
        mode: override ``norm.mode`` (e.g. token-mean metrics next to a seq-mean loss).
        seq_num_tokens: [B] full token count of each sequence, for when a sequence is
            split across calls (context parallelism); defaults to the row sums of ``mask``.

    A sequence must not be split across calls unless ``seq_num_tokens`` is given.
    Masked-out positions are selected away (not multiplied by 0) so NaN/inf there is harmless.
    """
    mode = norm.mode if mode is None else mode
    m = mask.bool()
    masked = torch.where(m, token_loss, torch.zeros((), dtype=token_loss.dtype, device=m.device))
    num_seqs = max(norm.num_seqs, 1)
    if mode == "token-mean":
        return masked.sum() / max(norm.num_tokens, 1)
    if mode == "token-sum":
        return masked.sum()
    if mode == "seq-mean-token-sum":
        return masked.sum() / num_seqs
    if mode == "seq-mean-token-mean":
        n = m.sum(dim=-1) if seq_num_tokens is None else seq_num_tokens
        # Empty rows have a zero sum; clamping only avoids 0/0 there.
        per_seq = masked.sum(dim=-1) / n.clamp(min=1).to(masked.dtype)
        return per_seq.sum() / num_seqs
    if mode == "seq-mean-token-sum-norm":
        if norm.scale_factor is None:
            raise ValueError("seq-mean-token-sum-norm needs norm.scale_factor")
        return masked.sum() / (num_seqs * norm.scale_factor)
    raise ValueError(f"unknown aggregation mode {mode!r}; expected {AGGREGATION_MODES}")

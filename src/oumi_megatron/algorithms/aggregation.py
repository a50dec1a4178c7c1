"""Split-invariant loss aggregation over completion tokens (pure torch).

Every function here returns a micro-batch *contribution*: ``sum(...) / global_normaliser``.
The normalisers are fixed once per optimizer step for the whole global batch, so summing
the contributions of all micro-batches on all data-parallel ranks gives exactly the
full-batch value, however the batch was split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

AggregationMode = Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"]
AGGREGATION_MODES: tuple[str, ...] = (
    "token-mean",
    "seq-mean-token-mean",
    "seq-mean-token-sum-norm",
)


def batch_counts(mask: torch.Tensor) -> torch.Tensor:
    """Return ``[num_tokens, num_seqs]`` (int64) of a (local) batch mask [B, T].

    ``num_seqs`` counts rows with at least one completion token, so all-zero padding rows
    are ignored. Sum this tensor over micro-batches / all-reduce it over DP ranks, then
    build the normaliser with :meth:`LossNormalizer.from_counts`.
    """
    m = mask.bool()
    return torch.stack([m.sum(), m.any(dim=-1).sum()]).to(torch.int64)


@dataclass(frozen=True)
class LossNormalizer:
    """Global normalisers of one optimizer step.

    Attributes:
        mode: aggregation mode used by :func:`aggregate_loss` by default.
        num_tokens: completion tokens in the global batch (all micro-batches, all DP ranks).
        num_seqs: non-empty sequences in the global batch.
        max_len: constant length for ``seq-mean-token-sum-norm`` (e.g. max completion
            length); required for that mode, ignored otherwise.
    """

    mode: AggregationMode
    num_tokens: int
    num_seqs: int
    max_len: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in AGGREGATION_MODES:
            raise ValueError(
                f"unknown aggregation mode {self.mode!r}; expected {AGGREGATION_MODES}"
            )
        if self.num_tokens < 0 or self.num_seqs < 0:
            raise ValueError("num_tokens and num_seqs must be >= 0")
        if self.num_seqs > self.num_tokens:
            raise ValueError(f"num_seqs={self.num_seqs} > num_tokens={self.num_tokens}")
        if self.mode == "seq-mean-token-sum-norm" and (self.max_len is None or self.max_len < 1):
            raise ValueError("seq-mean-token-sum-norm needs a constant max_len >= 1")

    @classmethod
    def from_counts(
        cls,
        mode: AggregationMode,
        num_tokens: int,
        num_seqs: int,
        max_len: int | None = None,
    ) -> LossNormalizer:
        """Build from already-reduced global counts (e.g. all-reduced :func:`batch_counts`)."""
        return cls(mode=mode, num_tokens=int(num_tokens), num_seqs=int(num_seqs), max_len=max_len)

    @classmethod
    def from_global_batch(
        cls, mask: torch.Tensor, mode: AggregationMode, max_len: int | None = None
    ) -> LossNormalizer:
        """Build from the mask [B, T] of the whole global batch (single-process case)."""
        num_tokens, num_seqs = batch_counts(mask).tolist()
        return cls.from_counts(mode, num_tokens, num_seqs, max_len)


def aggregate_loss(
    token_loss: torch.Tensor,
    mask: torch.Tensor,
    norm: LossNormalizer,
    mode: AggregationMode | None = None,
    seq_num_tokens: torch.Tensor | None = None,
) -> torch.Tensor:
    """Contribution of one micro-batch [B, T] to the global aggregated loss.

    Modes (``m`` = mask, ``N`` = norm.num_tokens, ``S`` = norm.num_seqs, ``L`` = max_len):
      * token-mean:              sum_it l_it m_it / N
      * seq-mean-token-mean:     sum_i (sum_t l_it m_it / n_i) / S, n_i = sum_t m_it
      * seq-mean-token-sum-norm: sum_it l_it m_it / (L * S)   (Dr.GRPO)

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
    if mode == "token-mean":
        return masked.sum() / max(norm.num_tokens, 1)
    if mode == "seq-mean-token-mean":
        n = m.sum(dim=-1) if seq_num_tokens is None else seq_num_tokens
        # Empty rows have a zero sum; clamping only avoids 0/0 there.
        per_seq = masked.sum(dim=-1) / n.clamp(min=1).to(masked.dtype)
        return per_seq.sum() / max(norm.num_seqs, 1)
    if mode == "seq-mean-token-sum-norm":
        if norm.max_len is None:
            raise ValueError("seq-mean-token-sum-norm needs norm.max_len")
        return masked.sum() / (norm.max_len * max(norm.num_seqs, 1))
    raise ValueError(f"unknown aggregation mode {mode!r}; expected {AGGREGATION_MODES}")

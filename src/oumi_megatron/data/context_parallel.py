"""Context parallelism: which tokens of a micro-batch each context-parallel (CP) rank holds.

With CP size ``C`` every sequence (a packed slot, or a padded row) is padded to a multiple of
``2C`` and cut into ``2C`` equal chunks; rank ``r`` holds chunks ``r`` and ``2C - 1 - r``. Under
causal attention an early chunk attends to little and a late one to much, so pairing them
gives every rank the same work (Megatron / Transformer Engine's load balancing). A rank's two
chunks of one sequence sit next to each other in its local layout, so a sequence stays one
contiguous span there, and per-sequence reductions (`MicroBatch.to_rows`) keep working.

Megatron's convention is kept: packed-sequence parameters (``cu_seqlens*``, ``max_seqlen``)
stay those of the whole sequences. A packed shard also carries its rank's `attention_layout`
(``cp_layout``), built here on the host once per micro-batch, so that the attention and RoPE of
compiled layers read it instead of deriving it from the boundaries on the device.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from itertools import accumulate

import torch
from torch import Tensor

from oumi_megatron.data.packing import MicroBatch, PackedBatch


def local_positions(segments: Sequence[int], cp_rank: int, cp_size: int) -> Tensor:
    """Global positions (within the flattened micro-batch) of rank ``cp_rank``'s tokens, in
    its local order, for consecutive segments of the given lengths (each a multiple of 2·C)."""
    parts = []
    offset = 0
    for length in segments:
        if length % (2 * cp_size):
            raise ValueError(
                f"segment of {length} tokens is not a multiple of 2 × context_parallel_size "
                f"({2 * cp_size})"
            )
        chunk = length // (2 * cp_size)
        for k in (cp_rank, 2 * cp_size - 1 - cp_rank):
            parts.append(torch.arange(offset + k * chunk, offset + (k + 1) * chunk))
        offset += length
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)


def gather_order(segments: Sequence[int], cp_size: int) -> Tensor:
    """Index that puts the CP ranks' local tokens, concatenated rank by rank (an all-gather),
    back in global order."""
    gathered = torch.cat([local_positions(segments, r, cp_size) for r in range(cp_size)])
    return torch.argsort(gathered)


def attention_layout(segments: Sequence[int], cp_rank: int, cp_size: int) -> dict[str, Tensor]:
    """What rank ``cp_rank``'s attention and RoPE need to know of the layout, for consecutive
    segments of the given lengths: ``order`` (`gather_order`), ``segment`` (the segment of
    every global position), ``query`` (`local_positions`) and ``rope`` (each local token's
    position inside its own segment). Built from host integers with static shapes, so that
    compiled code that builds it has no data-dependent step."""
    segment = torch.cat([torch.full((n,), i, dtype=torch.long) for i, n in enumerate(segments)])
    starts = torch.tensor([0, *accumulate(segments)][:-1], dtype=torch.long)
    query = local_positions(segments, cp_rank, cp_size)
    return {"order": gather_order(segments, cp_size), "segment": segment, "query": query,
            "rope": query - starts[segment[query]]}  # fmt: skip


def _segments(batch: MicroBatch) -> list[int]:
    if isinstance(batch, PackedBatch):
        return (batch.cu_seqlens_padded[1:] - batch.cu_seqlens_padded[:-1]).tolist()
    return [batch.input_ids.shape[1]]


def shard_for_context_parallel(batch: MicroBatch, cp_rank: int, cp_size: int) -> MicroBatch:
    """This CP rank's share of ``batch`` (every tensor laid out like ``input_ids``).

    Per-sequence metadata becomes local: each sequence is its local span (its slot's share,
    own padding included: the loss mask is 0 there), and ``seq_targets`` keeps each sequence's
    full count of loss tokens for per-sequence means.
    """
    if cp_size == 1:
        return batch
    targets = [int(t.sum()) for t in _per_sequence_masks(batch)]
    segments = _segments(batch)
    device = batch.input_ids.device
    layout = None
    if isinstance(batch, PackedBatch):  # its tokens and what its attention and RoPE need
        layout = {k: v.to(device) for k, v in attention_layout(segments, cp_rank, cp_size).items()}
        index = layout["query"]
    else:
        index = local_positions(segments, cp_rank, cp_size).to(device)

    def take(values: Tensor) -> Tensor:
        return values.index_select(1, index)

    tensors = {
        name: take(getattr(batch, name))
        for name in ("input_ids", "position_ids", "labels", "loss_mask")
    }
    aux = {key: take(value) for key, value in batch.aux.items()}
    if isinstance(batch, PackedBatch):
        slots = segments[: len(batch.seq_lengths)]
        starts = [int(s) // cp_size for s in batch.cu_seqlens_padded[: len(slots)].tolist()]
        lengths = [n // cp_size for n in slots]
    else:
        width = batch.input_ids.shape[1] // cp_size
        starts = [row * width for row in range(len(batch.seq_lengths))]
        lengths = [width] * len(batch.seq_lengths)
    return dataclasses.replace(
        batch, **tensors, aux=aux, seq_starts=starts, seq_lengths=lengths, seq_targets=targets,
        cp_layout=layout,
    )  # fmt: skip


def _per_sequence_masks(batch: MicroBatch) -> list[Tensor]:
    flat = batch.loss_mask.reshape(-1)
    return [flat[s : s + n] for s, n in zip(batch.seq_starts, batch.seq_lengths, strict=True)]

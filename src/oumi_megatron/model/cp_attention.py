"""Causal attention under context parallelism, in plain torch (what Transformer Engine's CP
attention gives): each rank holds two chunks of every sequence (`data.context_parallel`).

K and V are all-gathered over the CP group (one collective per layer, autograd-aware: the
backward sums each rank's gradient for the gathered K/V and keeps its own share), put back in
global order, and every local query attends to the keys at or before its global position in
its own sequence. All-gather rather than a ring: with GQA, K/V are small next to Q, and one
collective per layer keeps the backward simple; the mask makes SDPA use its masked kernels.

What each rank needs of the layout (gather order, segments, local positions) comes with a
packed micro-batch (`data.context_parallel.attention_layout`, built on the host): compiled
layers then have no data-dependent step. Padded rows (one segment per row) build it from the
shape, with static sizes.
"""

from __future__ import annotations

import dataclasses
import functools

import torch
import torch.distributed as dist
from megatron.core.packed_seq_params import PackedSeqParams

from oumi_megatron.data.context_parallel import attention_layout
from oumi_megatron.model.attention import attend, causal_band


@dataclasses.dataclass
class ContextParallelPackedSeqParams(PackedSeqParams):
    """Megatron's packed-sequence parameters with this rank's context-parallel layout."""

    cp_layout: dict[str, torch.Tensor] | None = None


def packed_seq_params(kwargs: dict) -> PackedSeqParams:
    """Megatron's `PackedSeqParams` from `PackedBatch.packed_seq_kwargs`, with the layout of
    a context-parallel shard where it has one."""
    if kwargs.get("cp_layout") is None:
        return PackedSeqParams(**{k: v for k, v in kwargs.items() if k != "cp_layout"})
    return ContextParallelPackedSeqParams(**kwargs)


class _GatherAlongFirstDim(torch.autograd.Function):
    """All-gather of equal-sized local tensors, concatenated rank by rank along dim 0."""

    @staticmethod
    def forward(ctx, local: torch.Tensor, group) -> torch.Tensor:
        ctx.group = group
        ctx.rank, ctx.size = dist.get_rank(group), dist.get_world_size(group)
        parts = [torch.empty_like(local) for _ in range(ctx.size)]
        dist.all_gather(parts, local.contiguous(), group=group)
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous()
        dist.all_reduce(grad, group=ctx.group)  # every rank's use of every rank's K/V
        return grad.chunk(ctx.size)[ctx.rank], None


@functools.lru_cache(maxsize=64)
def cached_layout(segments: tuple[int, ...], cp_rank: int, cp_size: int, device: str):
    """`attention_layout` on ``device``; cached in eager code (a step reuses few shapes)."""
    return {k: v.to(device) for k, v in attention_layout(segments, cp_rank, cp_size).items()}


def _gather_global(t: torch.Tensor, order: torch.Tensor, group) -> torch.Tensor:
    return _GatherAlongFirstDim.apply(t, group).index_select(0, order)


def _mask(query_pos: torch.Tensor, seg_id: torch.Tensor, window: int | None) -> torch.Tensor:
    """[local queries, global keys]: same segment, key at or before the query (and at most
    ``window`` positions back)."""
    keys = torch.arange(seg_id.numel(), device=seg_id.device)
    same = seg_id[query_pos][:, None] == seg_id[None, :]
    return same & causal_band(query_pos, keys, window)


def packed_attention(
    query, key, value, cu_seqlens_padded, group, scale, dropout_p=0.0, window=None, softcap=None,
    sink=None, layout=None,
):  # fmt: skip
    """THD: local ``[t, heads, dim]``; ``cu_seqlens_padded`` of the whole sequences, or their
    ``layout`` (`attention_layout`) if the batch brings it."""
    if layout is None:  # from the boundaries, read on the host
        segments = tuple((cu_seqlens_padded[1:] - cu_seqlens_padded[:-1]).tolist())
        rank, size = dist.get_rank(group), dist.get_world_size(group)
        layout = cached_layout(segments, rank, size, str(query.device))
    k, v = (_gather_global(t, layout["order"], group) for t in (key, value))
    q, k, v = (t.transpose(0, 1).unsqueeze(0) for t in (query, k, v))
    mask = _mask(layout["query"], layout["segment"], window)
    out = attend(q, k, v, mask, scale, dropout_p, softcap, sink=sink)
    return out.squeeze(0).transpose(0, 1).reshape(query.shape[0], -1)


def padded_attention(
    query, key, value, group, scale, dropout_p=0.0, window=None, softcap=None, sink=None
):
    """SBHD: local ``[s, b, heads, dim]`` (rows right-padded; the padding is never a key of a
    real token)."""
    rank, size = dist.get_rank(group), dist.get_world_size(group)
    seq = query.shape[0] * size
    layout = cached_layout((seq,), rank, size, str(query.device))
    k, v = (_gather_global(t, layout["order"], group) for t in (key, value))
    q, k, v = (t.permute(1, 2, 0, 3) for t in (query, k, v))
    mask = _mask(layout["query"], layout["segment"], window)
    out = attend(q, k, v, mask, scale, dropout_p, softcap, sink=sink)
    return out.permute(2, 0, 1, 3).reshape(query.shape[0], query.shape[1], -1)

"""Causal attention under context parallelism, in plain torch (what Transformer Engine's CP
attention gives): each rank holds two chunks of every sequence (`data.context_parallel`).

K and V are all-gathered over the CP group (one collective per layer, autograd-aware: the
backward sums each rank's gradient for the gathered K/V and keeps its own share), put back in
global order, and every local query attends to the keys at or before its global position in
its own sequence. All-gather rather than a ring: with GQA, K/V are small next to Q, and one
collective per layer keeps the backward simple; the mask makes SDPA use its masked kernels.
"""

from __future__ import annotations

import functools

import torch
import torch.distributed as dist

from oumi_megatron.data.context_parallel import gather_order, local_positions
from oumi_megatron.model.attention import attend, causal_band


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
def _layout(segments: tuple[int, ...], cp_rank: int, cp_size: int, device: str):
    """(global order index of the gathered tokens, local query positions, segment id of every
    global position) for one micro-batch shape; cached: a step reuses few shapes."""
    order = gather_order(segments, cp_size).to(device)
    query_pos = local_positions(segments, cp_rank, cp_size).to(device)
    seg_id = torch.repeat_interleave(
        torch.arange(len(segments)), torch.tensor(segments, dtype=torch.long)
    ).to(device)
    return order, query_pos, seg_id


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
    sink=None,
):  # fmt: skip
    """THD: local ``[t, heads, dim]``; ``cu_seqlens_padded`` of the whole sequences."""
    segments = tuple((cu_seqlens_padded[1:] - cu_seqlens_padded[:-1]).tolist())
    rank, size = dist.get_rank(group), dist.get_world_size(group)
    order, query_pos, seg_id = _layout(segments, rank, size, str(query.device))
    k, v = (_gather_global(t, order, group) for t in (key, value))
    q, k, v = (t.transpose(0, 1).unsqueeze(0) for t in (query, k, v))
    out = attend(q, k, v, _mask(query_pos, seg_id, window), scale, dropout_p, softcap, sink=sink)
    return out.squeeze(0).transpose(0, 1).reshape(query.shape[0], -1)


def padded_attention(
    query, key, value, group, scale, dropout_p=0.0, window=None, softcap=None, sink=None
):
    """SBHD: local ``[s, b, heads, dim]`` (rows right-padded; the padding is never a key of a
    real token)."""
    rank, size = dist.get_rank(group), dist.get_world_size(group)
    seq = query.shape[0] * size
    order, query_pos, seg_id = _layout((seq,), rank, size, str(query.device))
    k, v = (_gather_global(t, order, group) for t in (key, value))
    q, k, v = (t.permute(1, 2, 0, 3) for t in (query, k, v))
    out = attend(q, k, v, _mask(query_pos, seg_id, window), scale, dropout_p, softcap, sink=sink)
    return out.permute(2, 0, 1, 3).reshape(query.shape[0], query.shape[1], -1)

"""Core attention in plain torch (SDPA): causal, padded and packed (THD) sequences.

Megatron's local `DotProductAttention` refuses packed sequences and context parallelism; those are
Transformer Engine features. This module takes the same constructor and forward contract, so it
drops into a layer spec, and runs on CPU and GPU alike (SDPA picks flash/cuDNN kernels on GPU).
Context parallelism: `model.cp_attention`.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from megatron.core.packed_seq_params import PackedSeqParams
from megatron.core.transformer.enums import AttnMaskType
from megatron.core.transformer.module import MegatronModule
from megatron.core.transformer.transformer_config import TransformerConfig


def packed_causal_mask(cu_seqlens: torch.Tensor, total: int) -> torch.Tensor:
    """Boolean [t, t] mask, True where attention is allowed: causal within each sequence only."""
    positions = torch.arange(total, device=cu_seqlens.device)
    doc_ids = torch.bucketize(positions, cu_seqlens[1:], right=True)
    same_doc = doc_ids[:, None] == doc_ids[None, :]
    return same_doc & (positions[:, None] >= positions[None, :])


class TorchCoreAttention(MegatronModule):
    """Drop-in for `DotProductAttention` (same arguments) built on `F.scaled_dot_product_attention`."""

    def __init__(
        self,
        config: TransformerConfig,
        layer_number: int,
        attn_mask_type: AttnMaskType,
        attention_type: str,
        attention_dropout: float | None = None,
        softmax_scale: float | None = None,
        cp_comm_type: str | None = None,
        pg_collection=None,
        k_channels: int | None = None,
        v_channels: int | None = None,
    ):
        super().__init__(config=config)
        self.cp_size = config.context_parallel_size
        self.cp_group = getattr(pg_collection, "cp", None) if pg_collection is not None else None
        self.attn_mask_type = attn_mask_type
        self.dropout_p = (
            config.attention_dropout if attention_dropout is None else attention_dropout
        )
        # Multi-latent attention passes its query/key width (k_channels) and value width
        # (v_channels), which differ; SDPA takes a value width of its own.
        head_dim = k_channels if k_channels is not None else config.kv_channels
        self.softmax_scale = (
            softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(head_dim)
        )

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        attn_mask_type: AttnMaskType | None = None,
        attention_bias: torch.Tensor | None = None,
        packed_seq_params: PackedSeqParams | None = None,
    ) -> torch.Tensor:
        if attention_bias is not None:
            raise NotImplementedError("attention_bias is not supported by TorchCoreAttention")
        dropout_p = self.dropout_p if self.training else 0.0
        if self.cp_size > 1:
            return self._context_parallel(query, key, value, packed_seq_params, dropout_p)
        if packed_seq_params is not None:
            return self._packed(query, key, value, packed_seq_params, dropout_p)
        # Megatron layout [s, b, heads, dim] -> SDPA layout [b, heads, s, dim].
        q, k, v = (t.permute(1, 2, 0, 3) for t in (query, key, value))
        allowed = None if attention_mask is None else ~attention_mask
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=allowed,
            dropout_p=dropout_p,
            is_causal=allowed is None,
            scale=self.softmax_scale,
            enable_gqa=k.shape[1] != q.shape[1],
        )
        seq, batch = query.shape[0], query.shape[1]
        return out.permute(2, 0, 1, 3).reshape(seq, batch, -1)

    def _context_parallel(self, query, key, value, params, dropout_p: float) -> torch.Tensor:
        from megatron.core import parallel_state

        from oumi_megatron.model import cp_attention

        group = self.cp_group or parallel_state.get_context_parallel_group()
        if params is None:
            return cp_attention.padded_attention(
                query, key, value, group, self.softmax_scale, dropout_p
            )
        cu_seqlens = params.cu_seqlens_q_padded
        cu_seqlens = params.cu_seqlens_q if cu_seqlens is None else cu_seqlens
        return cp_attention.packed_attention(
            query, key, value, cu_seqlens, group, self.softmax_scale, dropout_p
        )

    def _packed(self, query, key, value, params: PackedSeqParams, dropout_p: float) -> torch.Tensor:
        # THD layout: [t, heads, dim]; sequences are laid end to end, delimited by cu_seqlens.
        cu_seqlens = params.cu_seqlens_q_padded
        if cu_seqlens is None:
            cu_seqlens = params.cu_seqlens_q
        total = query.shape[0]
        if use_varlen_flash(query, dropout_p):
            out = self._packed_varlen(query, key, value, cu_seqlens, params.max_seqlen_q)
            return out.reshape(total, -1)
        allowed = packed_causal_mask(cu_seqlens.to(query.device), total)
        q, k, v = (t.transpose(0, 1).unsqueeze(0) for t in (query, key, value))
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=allowed,
            dropout_p=dropout_p,
            scale=self.softmax_scale,
            enable_gqa=k.shape[1] != q.shape[1],
        )
        return out.squeeze(0).transpose(0, 1).reshape(total, -1)

    def _packed_varlen(
        self, query, key, value, cu_seqlens: torch.Tensor, max_len: int | None
    ) -> torch.Tensor:
        """Flash attention over the packed sequences (torch's `varlen_attn`): no [t, t] mask,
        which would send SDPA to its math kernel (about 10× slower updates on an H100).
        ``max_len`` (the longest slot, known on the host) saves a device sync per layer."""
        from torch.nn.attention.varlen import varlen_attn

        groups = query.shape[1] // key.shape[1]
        if groups > 1:  # grouped-query attention: one K/V head per group of query heads
            key, value = (t.repeat_interleave(groups, dim=1) for t in (key, value))
        cu = cu_seqlens.to(device=query.device, dtype=torch.int32)
        if max_len is None:
            max_len = int((cu[1:] - cu[:-1]).max().item())
        return varlen_attn(
            query, key, value, cu, cu, max_len, max_len,
            scale=self.softmax_scale, window_size=(-1, 0),  # causal within each sequence
        )  # fmt: skip


def use_varlen_flash(query: torch.Tensor, dropout_p: float) -> bool:
    """Flash varlen attention applies: CUDA, half precision, no dropout, torch provides it."""
    half = query.dtype in (torch.bfloat16, torch.float16)
    return query.is_cuda and half and dropout_p == 0 and _torch_has_varlen_attn()


@functools.cache
def _torch_has_varlen_attn() -> bool:
    # Asked once per process, not in every layer's forward.
    try:
        from torch.nn.attention.varlen import varlen_attn  # noqa: F401
    except ImportError:
        return False
    return True

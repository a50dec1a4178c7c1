"""Core attention in plain torch (SDPA): causal, padded and packed (THD) sequences, with the
per-layer sliding window and logit soft-capping some families use (Gemma, GPT-OSS, Mistral).

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

from oumi_megatron.model import flash4
from oumi_megatron.model.attention_windows import layer_window


def packed_causal_mask(
    cu_seqlens: torch.Tensor, total: int, window: int | None = None
) -> torch.Tensor:
    """Boolean [t, t] mask, True where attention is allowed: causal within each sequence only
    (and at most ``window`` keys back)."""
    positions = torch.arange(total, device=cu_seqlens.device)
    doc_ids = torch.bucketize(positions, cu_seqlens[1:], right=True)
    same_doc = doc_ids[:, None] == doc_ids[None, :]
    return same_doc & causal_band(positions, positions, window)


def causal_band(query_pos: torch.Tensor, key_pos: torch.Tensor, window: int | None):
    """[queries, keys]: key at or before the query, and at most ``window`` positions back."""
    behind = query_pos[:, None] - key_pos[None, :]
    allowed = behind >= 0
    return allowed if window is None else allowed & (behind <= window)


def attend(q, k, v, allowed, scale: float, dropout_p: float, softcap: float | None = None,
           is_causal: bool = False, sink: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """SDPA over ``[b, heads, s, dim]``. Two variants SDPA cannot do, computed explicitly with
    an fp32 softmax as Hugging Face's eager attention does: ``softcap`` passes the scores
    through ``softcap · tanh(score / softcap)``; ``sink`` (one logit per head, GPT-OSS) joins
    every query's softmax as an extra key with no value."""
    # Branching gives a plain bool under torch.compile, also where head counts are symbolic
    # (SDPA refuses a SymBool); bool() would not.
    gqa = True if k.shape[1] != q.shape[1] else False  # noqa: SIM210
    if softcap is None and sink is None:
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=allowed, dropout_p=dropout_p, is_causal=is_causal, scale=scale,
            enable_gqa=gqa,
        )  # fmt: skip
    if gqa:
        groups = q.shape[1] // k.shape[1]
        k, v = (t.repeat_interleave(groups, dim=1) for t in (k, v))
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    if is_causal:
        allowed = causal_band(*(torch.arange(n, device=q.device) for n in scores.shape[-2:]), None)
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    if sink is not None:
        column = sink.to(scores.dtype).view(1, -1, 1, 1).expand(*scores.shape[:-1], 1)
        scores = torch.cat([scores, column], dim=-1)
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
    if sink is not None:
        probs = probs[..., :-1]
    probs = F.dropout(probs, p=dropout_p) if dropout_p else probs
    return torch.matmul(probs, v)


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
        self.window = layer_window(config, layer_number)
        self.softcap = getattr(config, "attn_logit_softcapping", None) or None
        # Attention sinks (Megatron's ``softmax_type``): a learnt logit per head (GPT-OSS), or
        # a zero one ("off-by-one"); split over tensor-parallel ranks with the heads.
        softmax_type = getattr(config, "softmax_type", "vanilla")
        heads = config.num_attention_heads // config.tensor_model_parallel_size
        self.softmax_offset = None
        if softmax_type == "learnable":
            self.softmax_offset = torch.nn.Parameter(torch.zeros(heads, dtype=config.params_dtype))
        elif softmax_type == "off-by-one":
            self.register_buffer("softmax_offset", torch.zeros(heads), persistent=False)

    def sharded_state_dict(self, prefix: str = "", sharded_offsets=(), metadata=None):
        """The learnt sink is split over tensor-parallel ranks along its heads (as Megatron's
        ``DotProductAttention`` saves it)."""
        from megatron.core.transformer.utils import make_sharded_tensors_for_checkpoint

        if not isinstance(self.softmax_offset, torch.nn.Parameter):
            return {}
        state = self.state_dict(prefix="", keep_vars=True)
        return make_sharded_tensors_for_checkpoint(
            state, prefix, {"softmax_offset": 0}, sharded_offsets
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
        seq, batch = query.shape[0], query.shape[1]
        if attention_mask is None and self._flash4(query, value, dropout_p):
            out = flash4.dense_attention(query, key, value, self.softmax_scale, self.window)
            return out.reshape(seq, batch, -1)
        # Megatron layout [s, b, heads, dim] -> SDPA layout [b, heads, s, dim].
        q, k, v = (t.permute(1, 2, 0, 3) for t in (query, key, value))
        allowed = None if attention_mask is None else ~attention_mask
        if self.window is not None:
            positions = torch.arange(query.shape[0], device=query.device)
            band = causal_band(positions, positions, self.window)
            allowed = band if allowed is None else allowed & band
        out = attend(
            q, k, v, allowed, self.softmax_scale, dropout_p, self.softcap,
            is_causal=allowed is None, sink=self.softmax_offset,
        )  # fmt: skip
        return out.permute(2, 0, 1, 3).reshape(seq, batch, -1)

    def _flash4(self, query: torch.Tensor, value: torch.Tensor, dropout_p: float) -> bool:
        """FlashAttention-4 runs this call (`model.flash4`): plain causal softmax attention
        (a window allowed; no soft-capping, sink or dropout) with one head width for q, k and
        v (multi-latent attention's narrower values keep torch's kernels), on a GPU it
        supports."""
        plain = self.softcap is None and self.softmax_offset is None and dropout_p == 0
        same_width = query.shape[-1] == value.shape[-1]
        return plain and same_width and flash4.usable(query)

    def _context_parallel(self, query, key, value, params, dropout_p: float) -> torch.Tensor:
        from megatron.core import parallel_state

        from oumi_megatron.model import cp_attention

        group = self.cp_group or parallel_state.get_context_parallel_group()
        variant = dict(window=self.window, softcap=self.softcap, sink=self.softmax_offset)
        if params is None:
            return cp_attention.padded_attention(
                query, key, value, group, self.softmax_scale, dropout_p, **variant
            )
        cu_seqlens = params.cu_seqlens_q_padded
        cu_seqlens = params.cu_seqlens_q if cu_seqlens is None else cu_seqlens
        layout = getattr(params, "cp_layout", None)
        return cp_attention.packed_attention(
            query, key, value, cu_seqlens, group, self.softmax_scale, dropout_p, **variant,
            layout=layout,
        )  # fmt: skip

    def _packed(self, query, key, value, params: PackedSeqParams, dropout_p: float) -> torch.Tensor:
        # THD layout: [t, heads, dim]; sequences are laid end to end, delimited by cu_seqlens.
        cu_seqlens = params.cu_seqlens_q_padded
        if cu_seqlens is None:
            cu_seqlens = params.cu_seqlens_q
        total = query.shape[0]
        explicit = self.softcap is not None or self.softmax_offset is not None
        fa4 = self._flash4(query, value, dropout_p)
        if fa4 or (not explicit and use_varlen_flash(query, dropout_p)):
            out = self._packed_varlen(query, key, value, cu_seqlens, params.max_seqlen_q, fa4)
            return out.reshape(total, -1)
        allowed = packed_causal_mask(cu_seqlens.to(query.device), total, self.window)
        q, k, v = (t.transpose(0, 1).unsqueeze(0) for t in (query, key, value))
        out = attend(
            q, k, v, allowed, self.softmax_scale, dropout_p, self.softcap, sink=self.softmax_offset
        )
        return out.squeeze(0).transpose(0, 1).reshape(total, -1)

    def _packed_varlen(
        self, query, key, value, cu_seqlens: torch.Tensor, max_len: int | None, fa4: bool
    ) -> torch.Tensor:
        """Flash attention over the packed sequences (FlashAttention-4 with ``fa4``, else
        torch's `varlen_attn`): no [t, t] mask, which would send SDPA to its math kernel
        (about 10× slower updates on an H100).
        ``max_len`` (the longest slot, known on the host) saves a device sync per layer.
        Grouped-query attention passes its fewer K/V heads as they are: the flash kernel maps
        each group of query heads to its K/V head (and sums their K/V gradients) itself."""
        from torch.nn.attention.varlen import varlen_attn

        cu = cu_seqlens.to(device=query.device, dtype=torch.int32)
        if max_len is None:
            max_len = int((cu[1:] - cu[:-1]).max().item())
        if fa4:
            return flash4.varlen_attention(
                query, key, value, cu, max_len, self.softmax_scale, self.window
            )
        return varlen_attn(
            query, key, value, cu, cu, max_len, max_len,
            scale=self.softmax_scale,  # causal within each sequence, up to the window back
            window_size=(-1 if self.window is None else self.window, 0),
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

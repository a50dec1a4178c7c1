"""Rotary embeddings for packed (THD) sequences in one pass.

Without Transformer Engine, Megatron applies RoPE to packed sequences one sequence at a time in
a Python loop (`rope_utils._apply_rotary_pos_emb_thd`): ~10 small kernels per sequence, for q and
k, in every layer, forward and backward. Here each token's frequencies are gathered by its
position inside its own sequence and the whole packed row is rotated at once, with Megatron's own
`_apply_rotary_pos_emb_bshd`. Same values, no per-sequence loop. Under context parallelism
each local token's position comes from the CP layout (`data.context_parallel`). The deprecated
`multi_latent_attention` argument keeps Megatron's implementation.
"""

from __future__ import annotations

import functools

import torch
from megatron.core.models.common.embeddings import rope_utils

_MEGATRON_THD = rope_utils._apply_rotary_pos_emb_thd


def positions_in_sequence(cu_seqlens: torch.Tensor, total: int) -> torch.Tensor:
    """For each of `total` packed tokens, its index inside its own sequence.

    A token's sequence is the number of sequence ends at or before it. Eager code finds it by
    binary search (`bucketize`: O(tokens · log sequences)). Under `torch.compile` it is one
    comparison per (token, sequence) that inductor fuses into a single reduction, since
    inductor cannot lower `bucketize` over a slice of the boundaries on GPU: compiled layers
    need no graph break, and eager code no [tokens, sequences] mask (131 MB per call at 131k
    tokens in 1,000 sequences).
    """
    tokens = torch.arange(total, device=cu_seqlens.device)
    if torch.compiler.is_compiling():
        sequence = (tokens.unsqueeze(1) >= cu_seqlens[1:].unsqueeze(0)).sum(dim=1)
    else:
        sequence = torch.bucketize(tokens, cu_seqlens[1:], right=True)
    return tokens - cu_seqlens[sequence]


@functools.wraps(_MEGATRON_THD)
def apply_rotary_pos_emb_thd(
    t: torch.Tensor,
    cu_seqlens: torch.Tensor,
    freqs: torch.Tensor,
    rotary_interleaved: bool = False,
    mla_rotary_interleaved: bool = False,
    mscale: float = 1.0,
    cp_group=None,
    multi_latent_attention=None,
) -> torch.Tensor:
    if is_cos_sin(freqs):  # each packed token's cos and sin (`per_token_frequencies`)
        return apply_rotary_pos_emb_bshd(
            t.unsqueeze(1), freqs, rotary_interleaved=rotary_interleaved,
            mla_rotary_interleaved=mla_rotary_interleaved, mscale=mscale,
            multi_latent_attention=multi_latent_attention,
        ).squeeze(1)  # fmt: skip
    if cp_group is None or multi_latent_attention is not None:
        return _MEGATRON_THD(
            t, cu_seqlens, freqs, rotary_interleaved=rotary_interleaved,
            mla_rotary_interleaved=mla_rotary_interleaved, mscale=mscale, cp_group=cp_group,
            multi_latent_attention=multi_latent_attention,
        )  # fmt: skip
    if cp_group.size() > 1:
        token_freqs = freqs[_cp_positions(cu_seqlens, freqs, cp_group)]
        return rope_utils._apply_rotary_pos_emb_bshd(
            t.unsqueeze(1), token_freqs, rotary_interleaved=rotary_interleaved,
            mla_rotary_interleaved=mla_rotary_interleaved, mscale=mscale,
        ).squeeze(1)  # fmt: skip
    total = t.shape[0]  # = cu_seqlens[-1]; read from the shape to avoid a device sync
    if freqs.size(0) == total:
        token_freqs = freqs  # frequencies already given per packed position (as Megatron reads it)
    else:
        cu = cu_seqlens.to(device=freqs.device, dtype=torch.long)
        token_freqs = freqs[positions_in_sequence(cu, total)]
    return rope_utils._apply_rotary_pos_emb_bshd(
        t.unsqueeze(1),
        token_freqs,
        rotary_interleaved=rotary_interleaved,
        mla_rotary_interleaved=mla_rotary_interleaved,
        mscale=mscale,
    ).squeeze(1)


def is_cos_sin(freqs: torch.Tensor) -> bool:
    """[tokens, 1, 2, dim]: cos and sin of each token's angles (Megatron's frequencies are
    [positions, 1, 1, dim])."""
    return freqs.dim() == 4 and freqs.size(2) == 2


def rotate_with_cos_sin(
    t: torch.Tensor,
    cos_sin: torch.Tensor,
    rotary_interleaved: bool = False,
    mla_rotary_interleaved: bool = False,
    mscale: float = 1.0,
) -> torch.Tensor:
    """Megatron's `_apply_rotary_pos_emb_bshd` with the cos and sin of the angles given,
    [tokens, 1, 2, dim] in fp32, instead of taken from the angles in every layer: the same
    operations on the same values (scaled and cast to ``t``'s dtype as Megatron does)."""
    cos = (cos_sin[:, :, 0:1] * mscale).to(t.dtype)
    sin = (cos_sin[:, :, 1:2] * mscale).to(t.dtype)
    rot_dim = cos.shape[-1]
    t, t_pass = t[..., :rot_dim], t[..., rot_dim:]
    if mla_rotary_interleaved:
        t = torch.cat((t[..., 0::2], t[..., 1::2]), dim=-1)
    t = (t * cos) + (rope_utils._rotate_half(t, rotary_interleaved) * sin)
    return torch.cat((t, t_pass), dim=-1)


def _cp_positions(cu_seqlens: torch.Tensor, freqs: torch.Tensor, cp_group) -> torch.Tensor:
    """Index into ``freqs`` of this CP rank's tokens, from the sequence boundaries (read on the
    host; compiled layers get the layout with the batch instead)."""
    from oumi_megatron.model.cp_attention import cached_layout

    segments = tuple((cu_seqlens[1:] - cu_seqlens[:-1]).tolist())
    layout = cached_layout(segments, cp_group.rank(), cp_group.size(), str(freqs.device))
    return _layout_index(freqs, layout)


def _layout_index(freqs: torch.Tensor, layout: dict[str, torch.Tensor]) -> torch.Tensor:
    """Index into ``freqs`` of the tokens of a CP rank's `attention_layout`: each one's position
    inside its own sequence or, when ``freqs`` holds one row per packed position (Megatron's
    convention), its packed position."""
    packed_positions = freqs.size(0) == layout["segment"].numel()
    return layout["query"] if packed_positions else layout["rope"]


def per_token_frequencies(chunks: list[torch.nn.Module]) -> int:
    """Give each packed micro-batch its tokens' rotary cos and sin once, before the layers.

    `GPTModel` computes the angles of positions 0..max_seqlen once per forward and every
    layer's attention then finds each token's own (its position inside its sequence) in
    `apply_rotary_pos_emb_thd`, a search over the sequence boundaries and a gather, and takes
    their cos and sin: for q and k, in every layer, forward and backward. Here hooks on each
    `GPTModel` and its `RotaryEmbedding` gather the angles and take their cos and sin once per
    micro-batch ([tokens, 1, 2, dim], fp32; `rotate_with_cos_sin` applies them). Same values.
    Under context parallelism a packed shard's tokens are those of its layout (``cp_layout``,
    `data.context_parallel.attention_layout`); not for other rotary classes (YaRN, M-RoPE).
    Returns how many models were hooked."""
    from megatron.core.models.common.embeddings.rotary_pos_embedding import RotaryEmbedding
    from megatron.core.models.gpt import GPTModel

    count = 0
    for chunk in chunks:
        for module in chunk.modules():
            rotary = getattr(module, "rotary_pos_emb", None)
            if isinstance(module, GPTModel) and type(rotary) is RotaryEmbedding:
                module.register_forward_pre_hook(_note_packing, with_kwargs=True)
                rotary.register_forward_hook(_gather_per_token, with_kwargs=True)
                count += 1
    return count


def _note_packing(model, args, kwargs):
    """Forward pre-hook of `GPTModel`: the packed layout its rotary embedding will need."""
    packed = kwargs.get("packed_seq_params")
    tokens = kwargs.get("position_ids", kwargs.get("input_ids"))
    note = None
    if packed is not None and packed.qkv_format == "thd" and tokens is not None:
        layout = getattr(packed, "cp_layout", None)
        if layout is not None:  # a context-parallel shard: its tokens' positions come with it
            note = layout
        elif model.config.context_parallel_size == 1:
            # The boundaries the attention hands to the RoPE (Megatron's attention.py).
            cu = packed.cu_seqlens_q_padded if packed.cu_seqlens_q_padded is not None else (
                packed.cu_seqlens_q)  # fmt: skip
            note = (cu, tokens.shape[-1])
    model.rotary_pos_emb.__dict__["_packed_tokens"] = note


def _gather_per_token(rotary, args, kwargs, freqs):
    """Forward hook of `RotaryEmbedding`: its [max_seqlen, 1, 1, dim] angles as their cos and
    sin, [seq, 1, 2, dim] for padded rows, or each packed token's own, [tokens, 1, 2, dim]."""
    note = rotary.__dict__.pop("_packed_tokens", None)
    if freqs.dim() != 4 or freqs.size(2) != 1:
        return freqs
    if not kwargs.get("packed_seq", False):  # padded rows: every row's positions 0..seq-1
        return cos_sin_of(freqs)
    if note is None:
        return freqs
    if isinstance(note, dict):  # `data.context_parallel.attention_layout`
        return cos_sin_of(freqs[_layout_index(freqs, note)])
    cu, total = note
    positions = positions_in_sequence(cu.to(device=freqs.device, dtype=torch.long), total)
    return cos_sin_of(freqs[positions])


def cos_sin_of(angles: torch.Tensor) -> torch.Tensor:
    """[n, 1, 1, dim] angles -> [n, 1, 2, dim]: their cos and sin (`rotate_with_cos_sin`)."""
    return torch.cat((angles.cos(), angles.sin()), dim=2)


def apply_rotary_pos_emb_bshd(
    t: torch.Tensor,
    freqs: torch.Tensor,
    rotary_interleaved: bool = False,
    mla_rotary_interleaved: bool = False,
    mscale: float = 1.0,
    multi_latent_attention=None,
) -> torch.Tensor:
    """Megatron's `_apply_rotary_pos_emb_bshd`, which also takes the cos and sin of the angles
    ([seq, 1, 2, dim], `per_token_frequencies`) in place of the angles."""
    if is_cos_sin(freqs):
        mla = multi_latent_attention if multi_latent_attention is not None else (
            mla_rotary_interleaved)  # fmt: skip
        return rotate_with_cos_sin(t, freqs, rotary_interleaved, mla, mscale)
    from oumi_megatron import patches

    return patches.remember("rope-cos-sin")(
        t, freqs, rotary_interleaved=rotary_interleaved,
        mla_rotary_interleaved=mla_rotary_interleaved, mscale=mscale,
        multi_latent_attention=multi_latent_attention,
    )  # fmt: skip


def install_packed_rope() -> None:
    """Route Megatron's unfused THD RoPE through `apply_rotary_pos_emb_thd`, and its padded-row
    RoPE through `apply_rotary_pos_emb_bshd` (idempotent)."""
    from oumi_megatron import patches

    patches.check("packed-rope")
    patches.check("rope-cos-sin")
    rope_utils._apply_rotary_pos_emb_thd = apply_rotary_pos_emb_thd
    rope_utils._apply_rotary_pos_emb_bshd = apply_rotary_pos_emb_bshd

"""Sliding-window, soft-capped and sink attention (Gemma, GPT-OSS, Mistral) in our torch
core attention: padded and packed rows against an explicit reference written as Hugging Face's
eager attention computes it; the window applies only to the layers the config says."""

from __future__ import annotations

import pytest
import torch

HEADS, GROUPS, DIM = 4, 2, 8


def _attention(window: int | None, softcap: float | None, layer_number: int = 1, flags=None):
    from megatron.core.transformer.enums import AttnMaskType
    from megatron.core.transformer.transformer_config import TransformerConfig

    from oumi_megatron.model.attention import TorchCoreAttention

    config = TransformerConfig(
        num_layers=2, hidden_size=HEADS * DIM, num_attention_heads=HEADS,
        num_query_groups=GROUPS, kv_channels=DIM, attention_dropout=0.0,
        window_size=None if window is None else (window, 0), window_attn_skip_freq=flags,
    )  # fmt: skip
    config.attn_logit_softcapping = softcap
    return TorchCoreAttention(config, layer_number, AttnMaskType.causal, "self")


def _reference(q, k, v, window: int | None, softcap: float | None, sink=None) -> torch.Tensor:
    """One sequence, ``[s, heads, dim]``: scores, soft-cap, causal (and window) mask, a sink
    logit per head joining the softmax, fp32 softmax, as Hugging Face's eager attention."""
    k, v = (t.repeat_interleave(HEADS // GROUPS, dim=1) for t in (k, v))
    scores = torch.einsum("qhd,khd->hqk", q, k) / DIM**0.5
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    i = torch.arange(q.shape[0])
    behind = i[:, None] - i[None, :]
    allowed = (behind >= 0) & (behind <= (window if window is not None else q.shape[0]))
    scores = scores.masked_fill(~allowed, float("-inf"))
    if sink is not None:
        scores = torch.cat([scores, sink.view(-1, 1, 1).expand(-1, q.shape[0], 1)], dim=-1)
    probs = scores.softmax(-1, dtype=torch.float32)[..., : q.shape[0]]
    return torch.einsum("hqk,khd->qhd", probs, v).reshape(q.shape[0], -1)


def _qkv(total: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(total, h, DIM, generator=g) for h in (HEADS, GROUPS, GROUPS)]


@pytest.mark.parametrize("window,softcap", [(3, None), (None, 2.0), (3, 2.0)])
def test_padded_rows_match_reference(window, softcap) -> None:
    module = _attention(window, softcap)
    seq, batch = 12, 2
    rows = [_qkv(seq, seed) for seed in range(batch)]
    q, k, v = (torch.stack([row[i] for row in rows], dim=1) for i in range(3))  # [s, b, h, d]
    out = module(q, k, v, None)
    for b, (rq, rk, rv) in enumerate(rows):
        expected = _reference(rq, rk, rv, window, softcap)
        torch.testing.assert_close(out[:, b], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("window,softcap", [(3, None), (None, 2.0), (3, 2.0)])
def test_packed_sequences_match_reference(window, softcap) -> None:
    from megatron.core.packed_seq_params import PackedSeqParams

    module = _attention(window, softcap)
    lengths = [5, 12, 3]
    cu = torch.tensor([0, 5, 17, 20], dtype=torch.int32)
    params = PackedSeqParams(qkv_format="thd", cu_seqlens_q=cu, cu_seqlens_kv=cu,
                             max_seqlen_q=12, max_seqlen_kv=12)  # fmt: skip
    q, k, v = _qkv(sum(lengths))
    out = module(q, k, v, None, packed_seq_params=params)
    for start, end in zip(cu[:-1].tolist(), cu[1:].tolist(), strict=True):
        expected = _reference(q[start:end], k[start:end], v[start:end], window, softcap)
        torch.testing.assert_close(out[start:end], expected, atol=1e-5, rtol=1e-5)


def test_window_only_on_the_layers_the_config_names() -> None:
    """``window_attn_skip_freq`` flags per layer (1: windowed): layer 2 attends to everything."""
    windowed, full = (_attention(3, None, layer, flags=[1, 0]) for layer in (1, 2))
    assert (windowed.window, full.window) == (3, None)
    q, k, v = _qkv(10)
    out = full(*(t.unsqueeze(1) for t in (q, k, v)), None)[:, 0]
    torch.testing.assert_close(out, _reference(q, k, v, None, None), atol=1e-5, rtol=1e-5)


def test_hugging_face_layer_types_become_megatron_window_fields() -> None:
    from types import SimpleNamespace

    from oumi_megatron.model.attention_windows import apply_windows, window_flags

    def hf(**fields):
        return SimpleNamespace(num_hidden_layers=4, **fields)

    gemma = hf(sliding_window=512, layer_types=["sliding_attention"] * 3 + ["full_attention"])
    provider = SimpleNamespace(interleaved_attn_pattern=(5, 1))
    apply_windows(provider, gemma)
    # HF lets a query see sliding_window - 1 earlier keys; Megatron's window counts them.
    assert provider.window_size == (511, 0)
    assert provider.window_attn_skip_freq == [1, 1, 1, 0]
    assert provider.interleaved_attn_pattern == (3, 1)
    # Mistral v0.1: one window on every layer; Qwen2 without use_sliding_window: none.
    assert window_flags(hf(sliding_window=4096)) == [1, 1, 1, 1]
    assert window_flags(hf(sliding_window=4096, use_sliding_window=False)) is None
    assert window_flags(hf(sliding_window=None)) is None
    with pytest.raises(ValueError, match="repeating pattern"):
        apply_windows(
            provider,
            hf(
                sliding_window=8,
                layer_types=[
                    "full_attention",
                    "sliding_attention",
                    "sliding_attention",
                    "full_attention",
                ],
            ),
        )


def test_attention_sinks_join_each_softmax() -> None:
    """GPT-OSS: a learnt logit per head (``softmax_type: learnable``), windowed layer, packed."""
    from megatron.core.packed_seq_params import PackedSeqParams

    module = _attention(3, None)
    module.config.softmax_type = "learnable"
    module = type(module)(module.config, 1, module.attn_mask_type, "self")
    assert module.softmax_offset.shape == (HEADS,)
    with torch.no_grad():
        module.softmax_offset.copy_(torch.tensor([2.0, -1.0, 0.5, 0.0]))
    cu = torch.tensor([0, 7, 16], dtype=torch.int32)
    params = PackedSeqParams(qkv_format="thd", cu_seqlens_q=cu, cu_seqlens_kv=cu,
                             max_seqlen_q=9, max_seqlen_kv=9)  # fmt: skip
    q, k, v = _qkv(16)
    out = module(q, k, v, None, packed_seq_params=params)
    sink = module.softmax_offset.detach()
    for start, end in ((0, 7), (7, 16)):
        expected = _reference(q[start:end], k[start:end], v[start:end], 3, None, sink)
        torch.testing.assert_close(out[start:end], expected, atol=1e-5, rtol=1e-5)
    plain = _reference(q[7:16], k[7:16], v[7:16], 3, None)
    assert (out[7:16] - plain).abs().max() > 1e-2, "the sinks must change the output"

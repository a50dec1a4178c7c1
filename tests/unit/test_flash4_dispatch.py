"""FlashAttention-4 op plumbing on a machine without it: where it applies, that its fake
(shape-only) forward and the backward tied to it give the shapes torch.compile traces with, and
which attention calls the core attention hands to it (with which scale, window and lengths)."""

from __future__ import annotations

import pytest
import torch

from oumi_megatron.model import flash4


def test_not_used_off_cuda_or_in_full_precision():
    assert not flash4.usable(torch.zeros(4, 2, 8, dtype=torch.bfloat16))
    assert not flash4.usable(torch.zeros(4, 2, 8, dtype=torch.float32, device="meta"))


def test_fa2_setting_turns_it_off(monkeypatch):
    flash4._enabled.cache_clear()
    monkeypatch.setenv("OUMI_MEGATRON_FLASH_ATTENTION", "fa2")
    try:
        # Decided before any CUDA query: no GPU is needed to say no.
        assert flash4._enabled(0) is False
    finally:
        flash4._enabled.cache_clear()


def test_window_in_the_kernels_form():
    assert flash4._window(-1) == (None, None)
    assert flash4._window(48) == (48, 0)


def test_shapes_forward_and_backward_through_the_fake_ops():
    """Meta tensors run the fake implementations: out like q (v's width), gradients like q, k, v
    (grouped-query: fewer K/V heads), through the registered autograd formula."""
    tokens, heads, kv_heads, dim = 10, 12, 2, 128

    def leaf(h):
        return torch.empty(tokens, h, dim, dtype=torch.bfloat16, device="meta", requires_grad=True)

    q, k, v = leaf(heads), leaf(kv_heads), leaf(kv_heads)
    cu = torch.empty(3, dtype=torch.int32, device="meta")
    out, lse = torch.ops.oumi_megatron.fa4_fwd(q, k, v, cu, 6, 0.1, -1)
    assert out.shape == (tokens, heads, dim) and lse.shape == (heads, tokens)
    assert lse.dtype == torch.float32
    flash4.varlen_attention(q, k, v, cu, 6, 0.1).sum().backward()
    assert [t.grad.shape for t in (q, k, v)] == [q.shape, k.shape, v.shape]


def test_dense_rows_keep_megatron_layout_through_the_fake_ops():
    seq, batch, heads, kv_heads, dim = 16, 3, 12, 2, 128

    def leaf(h):
        return torch.empty(seq, batch, h, dim, dtype=torch.bfloat16, device="meta",
                           requires_grad=True)  # fmt: skip

    q, k, v = leaf(heads), leaf(kv_heads), leaf(kv_heads)
    out, lse = torch.ops.oumi_megatron.fa4_fwd(q, k, v, None, 0, 0.1, -1)
    assert out.shape == q.shape and lse.shape == (batch, heads, seq)
    flash4.dense_attention(q, k, v, 0.1).sum().backward()
    assert [t.grad.shape for t in (q, k, v)] == [q.shape, k.shape, v.shape]


def _core_attention(window=None, softcap=None):
    from megatron.core.transformer.enums import AttnMaskType
    from megatron.core.transformer.transformer_config import TransformerConfig

    from oumi_megatron.model.attention import TorchCoreAttention

    config = TransformerConfig(
        num_layers=1, hidden_size=32, num_attention_heads=4, num_query_groups=2, kv_channels=8,
        attention_dropout=0.0, window_size=None if window is None else (window, 0),
    )  # fmt: skip
    config.attn_logit_softcapping = softcap
    return TorchCoreAttention(config, 1, AttnMaskType.causal, "self")


def _recording(monkeypatch, usable: bool):
    """flash4 made usable (or not) on CPU, its two entry points recording their arguments (and
    answering zeros of the query's shape)."""
    calls = []
    monkeypatch.setattr(flash4, "usable", lambda q: usable)

    def varlen(q, k, v, cu, max_len, scale, window=None):
        calls.append(("varlen", cu.dtype, max_len, scale, window))
        return torch.zeros_like(q)

    def dense(q, k, v, scale, window=None):
        calls.append(("dense", scale, window))
        return torch.zeros_like(q)

    monkeypatch.setattr(flash4, "varlen_attention", varlen)
    monkeypatch.setattr(flash4, "dense_attention", dense)
    return calls


def test_core_attention_hands_packed_and_unmasked_rows_to_fa4(monkeypatch):
    from megatron.core.packed_seq_params import PackedSeqParams

    calls = _recording(monkeypatch, usable=True)
    attention = _core_attention(window=3)
    q, k, v = (torch.randn(10, h, 8) for h in (4, 2, 2))
    cu = torch.tensor([0, 4, 10], dtype=torch.int32)
    params = PackedSeqParams(qkv_format="thd", cu_seqlens_q=cu, cu_seqlens_kv=cu,
                             max_seqlen_q=6, max_seqlen_kv=6)  # fmt: skip
    out = attention(q, k, v, None, packed_seq_params=params)
    assert out.shape == (10, 32)
    rows = [t.unsqueeze(1).expand(-1, 2, -1, -1) for t in (q, k, v)]  # [s, b, heads, dim]
    assert attention(*rows, None).shape == (10, 2, 32)
    scale = attention.softmax_scale
    assert scale == pytest.approx(8**-0.5)
    assert calls == [("varlen", torch.int32, 6, scale, 3), ("dense", scale, 3)]
    # A mask (padded rows with one) keeps SDPA.
    mask = torch.zeros(2, 1, 10, 10, dtype=torch.bool)
    attention(*rows, mask)
    assert len(calls) == 2


@pytest.mark.parametrize("usable", [True, False])
def test_soft_capping_and_unusable_gpus_keep_the_other_paths(monkeypatch, usable):
    calls = _recording(monkeypatch, usable=usable)
    attention = _core_attention(softcap=None if not usable else 30.0)
    rows = [torch.randn(6, 2, h, 8) for h in (4, 2, 2)]
    attention(*rows, None)
    assert calls == []


def test_narrower_values_keep_the_other_paths(monkeypatch):
    """Multi-latent attention: q/k heads wider than v heads."""
    calls = _recording(monkeypatch, usable=True)
    attention = _core_attention()
    q, k = (torch.randn(6, 2, h, 8) for h in (4, 2))
    v = torch.randn(6, 2, 2, 4)
    assert attention(q, k, v, None).shape == (6, 2, 16)
    assert calls == []

"""FlashAttention-4 op plumbing on a machine without it: where it applies, and that its fake
(shape-only) forward and the backward tied to it give the shapes torch.compile traces with."""

from __future__ import annotations

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

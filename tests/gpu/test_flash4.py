"""FlashAttention-4 on packed sequences against torch's FlashAttention-2 varlen kernel: outputs
and gradients, with and without a window, eager and inside one compiled graph."""

from __future__ import annotations

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: run on the device"),
]


def _fa4_or_skip():
    from oumi_megatron.model import flash4

    probe = torch.empty(1, 128, device="cuda", dtype=torch.bfloat16)
    if not flash4.usable(probe):
        pytest.skip("flash-attn-4 not installed or the GPU is not Hopper/Blackwell")
    return flash4


def _packed(lengths, heads=12, kv_heads=2, dim=128, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    total = sum(lengths)
    q, k, v = (
        torch.randn(total, h, dim, device="cuda", generator=g, dtype=torch.bfloat16)
        for h in (heads, kv_heads, kv_heads)
    )
    cu = torch.tensor([0, *lengths], device="cuda").cumsum(0).to(torch.int32)
    return q, k, v, cu, torch.randn_like(q)


def _fa2(q, k, v, cu, max_len, scale, window):
    from torch.nn.attention.varlen import varlen_attn

    return varlen_attn(q, k, v, cu, cu, max_len, max_len, scale=scale,
                       window_size=(-1 if window is None else window, 0))  # fmt: skip


def _run(fn, q, k, v, cu, grad, *args):
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    out = fn(*leaves, cu, *args)
    out.backward(grad)
    return [out.detach().float(), *(t.grad.float() for t in leaves)]


@pytest.mark.parametrize(("window", "dim"), [(None, 128), (48, 128), (None, 64), (None, 96)])
def test_fa4_varlen_matches_fa2(window, dim):
    flash4 = _fa4_or_skip()
    lengths = [37, 5, 300, 1, 166, 2048]
    q, k, v, cu, grad = _packed(lengths, dim=dim)
    args = (max(lengths), dim**-0.5, window)
    ours = _run(flash4.varlen_attention, q, k, v, cu, grad, *args)
    reference = _run(_fa2, q, k, v, cu, grad, *args)
    for name, a, b in zip(("out", "dq", "dk", "dv"), ours, reference, strict=True):
        error, scale = (a - b).abs().max().item(), b.abs().max().item()
        assert error <= 2e-2 * scale, f"{name}: max |Δ| {error:.3g} vs scale {scale:.3g}"
        assert (a - b).abs().mean().item() <= 2e-3 * scale, name


def test_head_widths_outside_the_kernels_keep_torch_attention():
    flash4 = _fa4_or_skip()
    assert flash4.usable(torch.empty(4, 2, 64, device="cuda", dtype=torch.bfloat16))
    assert not flash4.usable(torch.empty(4, 2, 16, device="cuda", dtype=torch.bfloat16))


def test_fa4_varlen_is_one_graph_under_compile():
    flash4 = _fa4_or_skip()
    lengths = [100, 7, 900]
    q, k, v, cu, grad = _packed(lengths)

    def layer(q, k, v, cu):
        return flash4.varlen_attention(q * 1.5, k, v, cu, max(lengths), 128**-0.5) * 2

    compiled = torch.compile(layer, fullgraph=True)
    eager = _run(layer, q, k, v, cu, grad)
    traced = _run(compiled, q, k, v, cu, grad)
    for a, b in zip(eager, traced, strict=True):
        assert (a - b).abs().max().item() <= 1e-2 * b.abs().max().item()


@pytest.mark.parametrize("window", [None, 64])
def test_fa4_dense_rows_match_sdpa(window):
    """Megatron's [seq, batch, heads, dim] rows: FA4 reads them as strided views and writes
    its output and gradients in that layout."""
    import torch.nn.functional as F

    from oumi_megatron.model.attention import causal_band

    flash4 = _fa4_or_skip()
    g = torch.Generator(device="cuda").manual_seed(1)
    seq, batch = 512, 3
    q, k, v = (
        torch.randn(seq, batch, h, 128, device="cuda", generator=g, dtype=torch.bfloat16)
        for h in (12, 2, 2)
    )
    grad = torch.randn_like(q)

    def reference(q, k, v, cu):
        positions = torch.arange(seq, device="cuda")
        allowed = causal_band(positions, positions, window)
        out = F.scaled_dot_product_attention(
            *(t.permute(1, 2, 0, 3) for t in (q, k, v)), attn_mask=allowed, scale=128**-0.5,
            enable_gqa=True,
        )  # fmt: skip
        return out.permute(2, 0, 1, 3)

    def ours(q, k, v, cu):
        out = flash4.dense_attention(q, k, v, 128**-0.5, window)
        assert out.is_contiguous() and out.shape == q.shape
        return out

    for name, a, b in zip(
        ("out", "dq", "dk", "dv"),
        _run(ours, q, k, v, None, grad),
        _run(reference, q, k, v, None, grad),
        strict=True,
    ):
        error, scale = (a - b).abs().max().item(), b.abs().max().item()
        assert error <= 2e-2 * scale, f"{name}: max |Δ| {error:.3g} vs scale {scale:.3g}"

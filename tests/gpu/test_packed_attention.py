"""Packed (THD) attention on GPU: the flash varlen path (FlashAttention-4 where it applies, else
torch's FlashAttention-2) equals the masked SDPA path."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.gpu


def _attention(num_heads: int, num_groups: int):
    from megatron.core.packed_seq_params import PackedSeqParams
    from megatron.core.transformer.enums import AttnMaskType
    from megatron.core.transformer.transformer_config import TransformerConfig

    from oumi_megatron.model.attention import TorchCoreAttention

    config = TransformerConfig(num_layers=1, hidden_size=64 * num_heads,
                               num_attention_heads=num_heads, num_query_groups=num_groups,
                               kv_channels=64, attention_dropout=0.0)  # fmt: skip
    module = TorchCoreAttention(config, 1, AttnMaskType.causal, "self")
    return module, PackedSeqParams


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: run on the device")
@pytest.mark.parametrize("num_groups", [8, 2])  # MHA and grouped-query attention
def test_varlen_flash_equals_masked_sdpa(num_groups, monkeypatch):
    import oumi_megatron.model.attention as attention

    module, PackedSeqParams = _attention(8, num_groups)
    lengths = [37, 5, 120, 1, 66]
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32).cuda()
    params = PackedSeqParams(qkv_format="thd", cu_seqlens_q=cu, cu_seqlens_kv=cu,
                             max_seqlen_q=max(lengths), max_seqlen_kv=max(lengths))  # fmt: skip
    g = torch.Generator(device="cuda").manual_seed(0)
    total = sum(lengths)

    def inputs(heads):
        return torch.randn(total, heads, 64, device="cuda", generator=g, dtype=torch.bfloat16)

    q, k, v = inputs(8), inputs(num_groups), inputs(num_groups)
    grad_out = torch.randn(total, 8 * 64, device="cuda", generator=g, dtype=torch.bfloat16)

    usable = attention.flash4.usable

    def run(varlen: bool):
        # The flash path: FlashAttention-4 where it applies, else torch's FlashAttention-2.
        monkeypatch.setattr(attention, "use_varlen_flash", lambda *a: varlen)
        monkeypatch.setattr(attention.flash4, "usable", lambda q: varlen and usable(q))
        leaves = [t.detach().float().requires_grad_() for t in (q, k, v)]
        out = module(*(t.bfloat16() for t in leaves), None, packed_seq_params=params)
        out.backward(grad_out)
        return out.float(), [t.grad for t in leaves]

    fast_out, fast_grads = run(True)
    ref_out, ref_grads = run(False)
    # bf16 inputs and outputs: compare relative to each tensor's scale.
    names = ("out", "dq", "dk", "dv")
    for name, fast, ref in zip(names, [fast_out, *fast_grads], [ref_out, *ref_grads], strict=True):
        error, scale = (fast - ref).abs().max().item(), ref.abs().max().item()
        assert error <= 2e-2 * scale, f"{name}: max |Δ| {error:.3g} vs scale {scale:.3g}"

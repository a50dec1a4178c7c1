"""FLOPs per token (hand-computed, Megatron-LM formula, published models), peak table, MFU."""

from __future__ import annotations

import math

import pytest
import torch

from oumi_megatron.metrics import (
    PEAK_FLOPS_ENV,
    effective_seq_len,
    estimate_flops_per_token,
    mfu,
    peak_flops_for_device,
    peak_flops_for_name,
    throughput_metrics,
    tokens_per_second,
)

# L=2, h=8, ffn=16, 2 heads / 1 KV head (head_dim 4: q width 8, kv width 4), V=10, s=4.
SMALL = dict(
    num_layers=2,
    hidden_size=8,
    ffn_hidden_size=16,
    num_attention_heads=2,
    num_kv_heads=1,
    vocab_size=10,
    seq_len=4,
)


def megatron_flops_per_token(
    L, h, ffn, heads, groups, vocab, s, swiglu, kv_channels, topk=1, moe_ffn=None, shared=0
):
    """Megatron-LM ``num_floating_point_operations`` (training.py) for batch 1, divided by s."""
    q_ratio = kv_channels * heads / h
    ffn_used = ffn if moe_ffn is None else moe_ffn
    gm = 3 / 2 if swiglu else 1
    total = (
        12 * s * L * h * h
        * (
            (1 + groups / heads + s / h) * q_ratio
            + (ffn_used / h) * topk * gm
            + (shared / h) * gm
            + vocab / (2 * L * h)
        )
    )  # fmt: skip
    return total / s


def test_small_dense_gated_by_hand() -> None:
    # attn weights 2*8*8 + 2*8*4 = 192; SwiGLU 3*8*16 = 384; 2 layers -> 1152; output 10*8 = 80.
    # 6 * 1232 = 7392; attention scores 12 * L * s * q = 12*2*4*8 = 768 -> 8160.
    assert estimate_flops_per_token(**SMALL) == 8160
    assert estimate_flops_per_token(**SMALL, forward_only=True) == 8160 / 3


def test_small_dense_plain_mlp_by_hand() -> None:
    # MLP 2*8*16 = 256 -> per layer 448 -> 896 + 80 = 976 -> 5856 + 768.
    assert estimate_flops_per_token(**SMALL, gated_mlp=False) == 6624


def test_small_moe_counts_only_active_experts() -> None:
    # top-2 of 4 experts, expert ffn 6: active ffn 12 -> MLP 3*8*12 = 288 -> 480/layer.
    # 2*480 + 80 = 1040 -> 6240 + 768 = 7008. The number of experts does not matter.
    moe = dict(num_experts=4, moe_top_k=2, moe_ffn_hidden_size=6)
    assert estimate_flops_per_token(**SMALL, **moe) == 7008
    assert estimate_flops_per_token(**SMALL, **{**moe, "num_experts": 64}) == 7008
    # A shared expert of width 4 adds 3*8*4 = 96 weights per layer: 6 * 2 * 96 = 1152.
    shared = estimate_flops_per_token(**SMALL, **moe, shared_expert_ffn_hidden_size=4)
    assert shared == 7008 + 1152


@pytest.mark.parametrize(
    "cfg",
    [
        # Qwen3-0.6B-like: head_dim 128 != hidden/heads, GQA 16/8.
        dict(L=28, h=1024, ffn=3072, heads=16, groups=8, vocab=151936, s=4096, kv=128, swiglu=True),
        # GPT-2-like: MHA, plain MLP.
        dict(L=12, h=768, ffn=3072, heads=12, groups=12, vocab=50257, s=1024, kv=64, swiglu=False),
    ],
)
def test_matches_megatron_lm_formula(cfg: dict) -> None:
    ours = estimate_flops_per_token(
        cfg["L"], cfg["h"], cfg["ffn"], cfg["heads"], cfg["groups"], cfg["vocab"], cfg["s"],
        gated_mlp=cfg["swiglu"], kv_channels=cfg["kv"],
    )  # fmt: skip
    ref = megatron_flops_per_token(
        cfg["L"], cfg["h"], cfg["ffn"], cfg["heads"], cfg["groups"], cfg["vocab"], cfg["s"],
        cfg["swiglu"], cfg["kv"],
    )  # fmt: skip
    assert ours == pytest.approx(ref, rel=1e-12)


def test_moe_matches_megatron_lm_formula() -> None:
    ours = estimate_flops_per_token(
        24, 2048, 5632, 16, 4, 32000, 2048,
        num_experts=64, moe_top_k=8, moe_ffn_hidden_size=1408, shared_expert_ffn_hidden_size=2816,
    )  # fmt: skip
    ref = megatron_flops_per_token(
        24, 2048, 5632, 16, 4, 32000, 2048, True, 128, topk=8, moe_ffn=1408, shared=2816
    )
    assert ours == pytest.approx(ref, rel=1e-12)


def test_llama2_7b_published_size() -> None:
    # 32 x (4*4096^2 + 3*4096*11008) + 32000*4096 = 6.607e9 matmul weights (6.74e9 params with
    # the input embedding); attention 12 * 32 * 4096 * 4096 at s = 4096.
    flops = estimate_flops_per_token(32, 4096, 11008, 32, 32, 32000, 4096)
    assert flops == 6 * 6_607_077_376 + 12 * 32 * 4096 * 4096 == 46_084_915_200
    published = 6 * 6.74e9 + 12 * 32 * 4096 * 4096  # "6N + 12 L h s" with N = 6.74e9.
    assert flops == pytest.approx(published, rel=0.025)


def test_gpt3_175b_narayanan_et_al() -> None:
    # Megatron-LM paper (arXiv:2104.04473) eq. 3 without recomputation (72 instead of 96),
    # per token: 72 l h^2 (1 + s / 6h + V / 12lh).
    L, h, s, V = 96, 12288, 2048, 51200
    paper = 72 * L * h**2 * (1 + s / (6 * h) + V / (12 * L * h))
    ours = estimate_flops_per_token(L, h, 4 * h, 96, 96, V, s, gated_mlp=False)
    assert ours == pytest.approx(paper, rel=1e-12)
    assert ours == pytest.approx(1.1e12, rel=0.05)  # ~6 * 175e9 + attention.


def test_effective_seq_len_makes_attention_exact() -> None:
    lengths = [1, 3, 4]
    assert effective_seq_len(lengths) == (1 + 9 + 16) / 8
    assert effective_seq_len([]) == 0.0
    # Attention flops of the batch == tokens x per-token attention at the effective length.
    per_seq = sum(n * (estimate_flops_per_token(**{**SMALL, "seq_len": n})) for n in lengths)
    batch = sum(lengths) * estimate_flops_per_token(
        **{**SMALL, "seq_len": effective_seq_len(lengths)}
    )
    assert batch == pytest.approx(per_seq)


def test_validation() -> None:
    with pytest.raises(ValueError, match="num_kv_heads"):
        estimate_flops_per_token(**{**SMALL, "num_kv_heads": 3})
    with pytest.raises(ValueError, match="moe_top_k"):
        estimate_flops_per_token(**SMALL, num_experts=4, moe_top_k=5)


@pytest.mark.parametrize(
    ("name", "peak"),
    [
        ("NVIDIA H100 80GB HBM3", 989e12),
        ("NVIDIA H100 PCIe", 756e12),
        ("NVIDIA H100 NVL", 835e12),
        ("NVIDIA H200", 989e12),
        ("NVIDIA GH200 480GB", 989e12),
        ("NVIDIA A100-SXM4-80GB", 312e12),
        ("Tesla T4", None),
    ],
)
def test_peak_table(name: str, peak: float | None) -> None:
    assert peak_flops_for_name(name) == peak


def test_peak_on_cpu_is_none_unless_overridden(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PEAK_FLOPS_ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert peak_flops_for_device() is None
    assert peak_flops_for_device(override=1e12) == 1e12
    monkeypatch.setenv(PEAK_FLOPS_ENV, "5e14")
    assert peak_flops_for_device() == 5e14
    assert peak_flops_for_device(override=1e12) == 1e12  # Argument beats environment.


def test_mfu_and_throughput() -> None:
    assert tokens_per_second(1000, 2.0) == 500.0
    assert math.isnan(tokens_per_second(1000, 0.0))
    # 2000 tok/s * 5e11 FLOPs/tok = 1e15 FLOP/s over 2 devices of 1e15 peak -> 50 %.
    assert mfu(2000, 5e11, 1e15, num_devices=2) == 0.5
    assert mfu(2000, 5e11, None) is None
    m = throughput_metrics(4000, 2.0, 5e11, peak_flops=1e15, num_devices=2)
    assert m == {
        "perf/tokens_per_second": 2000.0,
        "perf/tokens_per_second_per_device": 1000.0,
        "perf/tflops_per_device": 500.0,
        "perf/mfu": 0.5,
    }
    assert "perf/mfu" not in throughput_metrics(4000, 2.0, 5e11)  # CPU: no MFU.

"""The layout planner: memory against a hand calculation and against peak memory measured on
an H100, and its plans for Llama-3.1-70B on 16 GPUs and 405B on 256 GPUs."""

from __future__ import annotations

import subprocess
import sys

import pytest

from oumi_megatron.planner.architecture import ArchitectureError, load_architecture
from oumi_megatron.planner.hardware import GiB, hardware
from oumi_megatron.planner.memory import Candidate, Options, Workload, estimate_memory
from oumi_megatron.planner.report import render
from oumi_megatron.planner.search import plan, rollout_tp_for
from oumi_megatron.testing.tiny_models import ARCHITECTURES


def test_published_parameter_counts() -> None:
    counts = {
        "llama3.1-8b": 8_030_261_248,  # safetensors totals of the published checkpoints
        "llama3.1-70b": 70_553_706_496,
        "llama3.1-405b": 405_853_388_800,
        "qwen2.5-1.5b": 1_543_714_304,
        "qwen3-30b-a3b": 30.53e9,  # "30.5B" on its model card
    }
    for name, published in counts.items():
        assert load_architecture(name).total_params == pytest.approx(published, rel=1e-3), name


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_parameter_count_of_every_family_is_exact(arch) -> None:
    """The planner's count from config.json alone equals the Hugging Face model's, for every
    supported family: multi-latent attention, experts sized by intermediate_size (Mixtral,
    OLMoE, GPT-OSS), Q/K and sandwich norms, sinks and biases."""
    import torch
    from transformers import AutoModelForCausalLM

    from oumi_megatron.planner.architecture import from_hf_dict
    from oumi_megatron.testing.tiny_models import tiny_config

    config = tiny_config(arch)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    expected = sum(p.numel() for p in model.parameters())
    assert from_hf_dict(config.to_dict(), arch).total_params == expected


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_pipeline_ranks_hold_every_parameter_once(arch) -> None:
    """Without tensor or expert parallelism, the parameters the memory estimate puts on the
    pipeline ranks add up to the model's (tied embeddings counted once per rank holding them)."""
    from oumi_megatron.planner.architecture import from_hf_dict
    from oumi_megatron.planner.memory import rank_params
    from oumi_megatron.testing.tiny_models import tiny_config

    model = from_hf_dict(tiny_config(arch).to_dict(), arch)
    for pp, stages in ((1, (4,)), (2, (2, 2))):
        cand = Candidate(tp=1, pp=pp, cp=1, dp=1, stage_layers=stages)
        held = sum(sum(rank_params(model, cand, rank)) for rank in range(pp))
        tied_copy = model.embedding_params if model.tied_embeddings and pp > 1 else 0
        assert held == pytest.approx(model.total_params + tied_copy)


def test_llama_8b_tp2_memory_by_hand() -> None:
    """Llama-3.1-8B, TP2 × DP4, 8,192 tokens per micro-batch, distributed optimizer."""
    arch = load_architecture("llama3.1-8b")
    cand = Candidate(tp=2, pp=1, cp=1, dp=4, stage_layers=(32,))
    work = Workload(seq_len=8192, micro_batch=1, global_batch=64)
    m = estimate_memory(arch, cand, work, Options(), 80 * GiB)

    h, ffn, vocab, layers, tp = 4096, 14336, 128256, 32, 2
    attention = 2 * h * 4096 + 2 * h * 1024  # q, o: 32 heads × 128; k, v: 8 heads × 128
    per_rank = layers * (attention / tp + 2 * h + 3 * h * ffn / tp) + 2 * vocab * h / tp + h
    assert m.weights == pytest.approx(per_rank * 2)
    assert m.gradients == pytest.approx(per_rank * 2)
    assert m.optimizer == pytest.approx(per_rank * 12 / 4)  # fp32 main + 2 Adam moments / DP
    per_token_layer = 4 * h + (2 * 32 + 2 * 8) * 128 / tp + 4 * ffn / tp
    assert m.activations == pytest.approx(layers * per_token_layer * 2 * 8192)
    assert m.logits == pytest.approx(8192 * vocab / tp * 6)
    total = per_rank * (2 + 2 + 3) + m.activations + m.logits + 2 * GiB
    assert m.peak == pytest.approx(total)
    assert m.peak / GiB == pytest.approx(55.61, abs=0.01)  # 26.2 + 24.5 + 2.9 + 2


@pytest.mark.parametrize(
    ("tokens", "measured_gib"),
    [(8192, 51.2), (4 * 2304, 56.7)],  # packed 8,192-token budget; 4 padded rows of ≤ 2,304
)
def test_estimate_matches_measured_h100_peak(tokens, measured_gib) -> None:
    """docs/benchmarks.md, "Training step" (one H100, 2026-12-05): Qwen2.5-1.5B's shape, bf16,
    TP1, no distributed optimizer, peak memory of the update."""
    arch = load_architecture("qwen2.5-1.5b")
    cand = Candidate(tp=1, pp=1, cp=1, dp=1, stage_layers=(28,))
    work = Workload(seq_len=tokens, micro_batch=1, global_batch=16)
    m = estimate_memory(arch, cand, work, Options(distributed_optimizer=False), 80 * GiB)
    assert m.peak / GiB == pytest.approx(measured_gib, rel=0.05)


def _plan(model: str, gpus: int, gpu: str = "h100", share: float = 0.3):
    arch = load_architecture(model)
    hw = hardware(gpu, None, 8)
    work = Workload(seq_len=4096, micro_batch=1, global_batch=256, rollout_share=share,
                    rollout_tp=rollout_tp_for(arch, hw, share))  # fmt: skip
    return plan(arch, gpus, hw, work)


def test_plan_70b_on_16_gpus() -> None:
    result = _plan("llama3.1-70b", 16)
    labels = [r.candidate.label() for r in result.valid]
    assert "TP8×PP2" in labels  # the design's quick start is valid and fits
    quick_start = result.valid[labels.index("TP8×PP2")]
    # DP is 1: the fp32 optimizer state (12 bytes × 70.6 B / 16) cannot be sharded: offloaded.
    assert quick_start.options.optimizer_offload == 1.0
    assert all(r.memory.peak <= 80 * GiB for r in result.valid)
    reasons = {r.label: r.reason for r in result.rejected}
    assert reasons["TP16×PP1"].startswith("tensor parallelism (16) spans nodes")
    assert reasons["TP1×PP1"].startswith("needs ")  # 70 B on one GPU
    text = render(result)
    assert "TP16×PP1" in text and "spans nodes" in text
    assert "tensor_model_parallel_size:" in text and "Best:" in text
    assert "sequence_parallel: true" in text  # the best layout is TP > 1


def test_plan_405b_on_256_gpus() -> None:
    on_h100 = _plan("llama3.1-405b", 256)
    assert not on_h100.valid  # the colocated engine cannot hold 405 B on 80 GB cards
    assert "rollout engine needs 94.5 GiB" in on_h100.rejected[0].reason
    result = _plan("llama3.1-405b", 256, gpu="h200", share=0.8)
    assert result.valid
    by_label = {r.candidate.label(): r for r in result.valid}
    recipe = by_label["TP8×PP16×VPP2×CP2"]  # configs/recipes/grpo-llama3.1-405b-…
    assert recipe.candidate.stage_layers == (7,) + (8,) * 14 + (7,)  # emb + loss counted
    assert recipe.split.embedding_in_split and recipe.split.loss_in_split
    reasons = {r.label: r.reason for r in result.rejected}
    assert "cannot be split over pipeline_model_parallel_size (64)" in reasons["TP1×PP64×VPP4"]
    assert "account_for_embedding_in_pipeline_split: true" in render(result)


def test_moe_plan_lays_out_tensor_parallel_experts_with_sequence_parallelism() -> None:
    result = _plan("qwen3-30b-a3b", 8)
    by_label = {r.candidate.label(): r for r in result.valid}
    assert by_label["TP2×PP4"].candidate.sp  # Megatron's MoE layers under TP need SP
    assert not by_label["TP1×PP4"].candidate.sp
    assert any(r.candidate.ep > 1 for r in result.valid)


def test_sequence_parallelism_splits_the_norm_inputs() -> None:
    """The 4·h elements per token and layer (norm and projection inputs) go over TP."""
    arch = load_architecture("llama3.1-8b")
    work = Workload(seq_len=8192, micro_batch=1, global_batch=64)
    plain, split = (
        estimate_memory(arch, Candidate(tp=2, pp=1, cp=1, dp=4, stage_layers=(32,), sp=sp),
                        work, Options(), 80 * GiB)
        for sp in (False, True)
    )  # fmt: skip
    assert plain.activations - split.activations == pytest.approx(32 * (4 * 4096 / 2) * 2 * 8192)
    assert plain.weights == split.weights and plain.logits == split.logits


def test_unknown_model_names_the_shipped_ones() -> None:
    with pytest.raises(ArchitectureError, match="llama3.1-70b.*Did you mean 'llama3.1-70b'"):
        load_architecture("llama3.1-70")


def test_cli_plan_and_check(tmp_path) -> None:
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "oumi_megatron", "plan", *args],
                              capture_output=True, text=True)  # fmt: skip

    out = cli("--model", "llama3.1-8b", "--gpus", "8", "--top", "3")
    assert out.returncode == 0, out.stderr
    assert "Rejected:" in out.stdout and "megatron:" in out.stdout
    bad = cli("--model", "nope", "--gpus", "8")
    assert bad.returncode == 2 and "--model 'nope'" in bad.stderr

"""Weight gradients accumulated by the GEMM into DDP's buffer (`model.fused_wgrad`) on GPU: the
mixed-precision GEMM (bf16 operands into an fp32 buffer) in place, and a compiled bf16 update
whose gradients match the hook's (autograd's bf16 gradient added by DDP) within bf16 rounding,
one graph per layer."""

from __future__ import annotations

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: run on the device"),
]


def test_bf16_operands_accumulate_into_fp32_in_place():
    from oumi_megatron.model.fused_wgrad import accumulate_wgrad_

    g = torch.Generator(device="cuda").manual_seed(0)
    grad_output = torch.randn(4096, 1536, device="cuda", generator=g).bfloat16()
    total_input = torch.randn(4096, 2048, device="cuda", generator=g).bfloat16()
    main_grad = torch.randn(1536, 2048, device="cuda", generator=g)
    expected = main_grad + grad_output.double().t().mm(total_input.double()).float()
    pointer = main_grad.data_ptr()
    accumulate_wgrad_(main_grad, grad_output, total_input)
    assert main_grad.data_ptr() == pointer
    torch.testing.assert_close(main_grad, expected, rtol=1e-5, atol=1e-3)


def _update(model_dir, work, fused: bool, dtype=torch.bfloat16):
    from test_compiled_layers import _policy, _sequences

    from oumi_megatron.algorithms.aggregation import LossNormalizer
    from oumi_megatron.algorithms.grpo import GrpoLossConfig
    from oumi_megatron.model import fused_wgrad
    from oumi_megatron.training.step_batches import BatchingSettings, build_microbatches

    policy = _policy(model_dir, work, compiled=True, dtype=dtype)
    if fused:  # 4 layers × QKV, output projection, fc1, fc2 (compiling happens at first use)
        assert fused_wgrad.install(policy.model) == 4 * 4
    seqs = _sequences()
    batching = BatchingSettings(micro_batch_size=4, dp_size=1, dp_rank=0, packing=True,
                                token_budget=256)  # fmt: skip
    batches, _ = build_microbatches(seqs, batching)
    assert len(batches) > 2  # several micro-batches accumulate into the buffer
    batches = policy.with_logprobs(batches, "old_logprobs")
    norm = LossNormalizer.from_global_batch(
        torch.nn.utils.rnn.pad_sequence(seqs.loss_masks, batch_first=True), "token-mean"
    )
    out = policy.train_step(batches, GrpoLossConfig(), norm)
    grads = {n: p.main_grad.float().clone() for n, p in policy.model[0].named_parameters()}
    return grads, out["grad_norm"]


def test_compiled_update_matches_the_hook_within_bf16_rounding(tmp_path):
    from torch._dynamo.utils import counters

    from oumi_megatron.parallel.layout import ParallelLayout
    from oumi_megatron.parallel.startup import init_distributed, init_model_parallel
    from oumi_megatron.testing.tiny_models import build_tiny_model

    model_dir = build_tiny_model("qwen2", tmp_path / "qwen2")
    init_distributed()
    init_model_parallel(ParallelLayout(), seed=5)
    hook, hook_norm = _update(model_dir, tmp_path / "hook", fused=False)
    counters.clear()
    fused, fused_norm = _update(model_dir, tmp_path / "fused", fused=True)
    assert dict(counters["graph_break"]) == {}
    assert fused_norm == pytest.approx(hook_norm, rel=1e-2)
    worst = max((fused[n] - hook[n]).norm().item() / hook[n].norm().item() for n in hook)
    print(f"grad norm hook {hook_norm:.6g} fused {fused_norm:.6g}; worst relative Δ {worst:.2e}")
    assert worst <= 2e-2

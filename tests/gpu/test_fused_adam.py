"""On GPU the optimizer runs torch's fused AdamW by default, and one GRPO update with it gives
the multi-tensor AdamW's fp32 main parameters (bf16 Qwen2-shaped tiny model)."""

from __future__ import annotations

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: run on the device"),
]


def _main_params(policy) -> list[torch.Tensor]:
    return [
        p.detach().clone() for g in policy.optimizer.optimizer.param_groups for p in g["params"]
    ]


def test_fused_adam_is_the_default_and_matches_the_multi_tensor_one(tmp_path):
    from test_compiled_layers import _policy, _step  # tests/gpu is on sys.path under pytest

    from oumi_megatron.parallel.layout import ParallelLayout
    from oumi_megatron.parallel.startup import init_distributed, init_model_parallel
    from oumi_megatron.testing.tiny_models import build_tiny_model

    model_dir = build_tiny_model("qwen2", tmp_path / "qwen2")
    init_distributed()
    init_model_parallel(ParallelLayout(), seed=5)
    fused = _policy(model_dir, tmp_path / "fused", compiled=False)
    groups = fused.optimizer.optimizer.param_groups
    assert all(g["fused"] and not g["foreach"] for g in groups)
    multi = _policy(model_dir, tmp_path / "multi", compiled=False)
    for group in multi.optimizer.optimizer.param_groups:
        group.update(fused=False, foreach=True)
    before = _main_params(fused)
    results = [_step(policy) for policy in (fused, multi)]
    assert results[0][1] == results[1][1] and results[0][2] == results[1][2]  # same loss, norm
    moved = 0.0
    for start, a, b in zip(before, _main_params(fused), _main_params(multi), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
        moved = max(moved, (a - start).abs().max().item())
    assert moved > 0, "the update changed nothing"

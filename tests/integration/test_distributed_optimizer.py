"""Megatron's DistributedOptimizer (optimizer state sharded over data-parallel ranks) on CPU:
an exact resume at DP2 of bf16 Qwen2 (biases and norms in bf16 too, fp32 main parameters
sharded). Its fp32 update equals the plain optimizer's in test_update_invariance (DP2 and
TP2×DP2), and fp32 runs resume exactly in test_grpo_train."""

from __future__ import annotations

import shutil

import pytest
from helpers import assert_same_run, metrics, train

DISTOPT = ["megatron.ddp_config.use_distributed_optimizer=true", "training.save_steps=2",
           "training.max_steps=4"]  # fmt: skip
CASES = {"qwen2_bf16": ("qwen2", ["megatron.transformer_config.params_dtype=bf16"])}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_resume_with_distributed_optimizer_is_exact(case, tiny_models, tmp_path):
    arch, overrides = CASES[case]
    model_dir = tiny_models / arch
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(2, model_dir, straight, *DISTOPT, *overrides)
    # Resume a copy from its step_2: Adam moments, step counts and sharded main params must
    # come back exactly for steps 3-4 to repeat.
    shutil.copytree(straight, resumed)
    shutil.rmtree(resumed / "hf_model")
    train(2, model_dir, resumed, *DISTOPT, *overrides, "training.resume_from_checkpoint=step_2")
    assert [r["step"] for r in metrics(resumed)] == [1, 2, 3, 4]
    assert_same_run(straight, resumed)

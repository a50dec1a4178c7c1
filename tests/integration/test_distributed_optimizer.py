"""Megatron's DistributedOptimizer (optimizer state sharded over data-parallel ranks) on CPU:
an exact resume at DP2. Its update equals the plain optimizer's in test_update_invariance."""

from __future__ import annotations

import shutil

import pytest
from helpers import assert_same_run, metrics, train

DISTOPT = ["megatron.ddp_config.use_distributed_optimizer=true", "training.save_steps=2",
           "training.max_steps=4"]  # fmt: skip


@pytest.mark.slow
def test_resume_with_distributed_optimizer_is_exact(tiny_models, tmp_path):
    model_dir = tiny_models / "llama"
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(2, model_dir, straight, *DISTOPT)
    # Resume a copy from its step_2: Adam moments, step counts and sharded main params must
    # come back exactly for steps 3-4 to repeat.
    shutil.copytree(straight, resumed)
    shutil.rmtree(resumed / "hf_model")
    train(2, model_dir, resumed, *DISTOPT, "training.resume_from_checkpoint=step_2")
    assert [r["step"] for r in metrics(resumed)] == [1, 2, 3, 4]
    assert_same_run(straight, resumed)

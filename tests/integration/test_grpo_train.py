"""End-to-end GRPO runs through the CLI under torchrun (gloo): layouts, weight sync, resume."""

from __future__ import annotations

import math
import os
import subprocess

import pytest
from helpers import (
    RECIPE,
    REPO,
    SMALL_RUN,
    TORCHRUN,
    assert_same_run,
    load_weights,
    metrics,
    quiet_env,
    train,
)

LAYOUTS = {
    "TP2": (2, ["megatron.tensor_model_parallel_size=2"]),
    "PP2": (2, ["megatron.pipeline_model_parallel_size=2"]),
    "DP2": (2, []),
    "PP2xVPP2": (
        2,
        [
            "megatron.pipeline_model_parallel_size=2",
            "megatron.virtual_pipeline_model_parallel_size=2",
        ],
    ),  # fmt: skip
    # Rollout in two separate processes, weights broadcast over gloo.
    "TP2_gloo_2workers": (
        2,
        [
            "megatron.tensor_model_parallel_size=2",
            "megatron.weight_sync_method=gloo",
            "megatron.rollout_workers=2",
        ],
    ),  # fmt: skip
    "TP2xPP2": (
        4,
        ["megatron.tensor_model_parallel_size=2", "megatron.pipeline_model_parallel_size=2"],
    ),  # fmt: skip
    # Truncated sampling: the trainer's log-probs are of the engine's top-k/top-p distribution.
    "TP2_topp_topk": (
        2,
        ["megatron.tensor_model_parallel_size=2", "grpo.top_p=0.9", "grpo.top_k=20"],
    ),  # fmt: skip
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_layout_trains_syncs_and_exports(layout, tiny_models, tmp_path):
    nproc, overrides = LAYOUTS[layout]
    out = tmp_path / layout
    train(nproc, tiny_models / "llama", out, "training.max_steps=2", *overrides)
    rows = metrics(out)
    assert [r["step"] for r in rows] == [1, 2]
    first = rows[0]
    # Step 0, identical weights in trainer and engine (fp32).
    assert abs(first["ratio/mean"] - 1.0) <= 1e-6
    assert first["mismatch/token_mult_prob_error"] <= 1.0001
    # Step 2's rollouts come from the engine after the weight sync of step 1.
    for row in rows:
        assert row["mismatch/max_abs_logprob_diff"] <= 1e-5, row
    if layout == "TP2_topp_topk":
        assert all(row["mismatch/outside_kept_frac"] == 0.0 for row in rows)
        assert all(row["entropy"] < math.log(20) for row in rows), "at most 20 tokens are kept"
    assert rows[1]["grad_norm"] > 0 and math.isfinite(rows[1]["loss/policy"])
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(out / "hf_model")
    tokenizer = AutoTokenizer.from_pretrained(out / "hf_model")
    prompt = tokenizer("What is 2 + 3?", return_tensors="pt")
    generated = model.generate(**prompt, max_new_tokens=4, do_sample=False)
    assert generated.shape[1] > prompt["input_ids"].shape[1], "the exported model must generate"
    assert (out / "reward_curve.png").exists()


def test_resume_after_kill_equals_straight_run(tiny_models, tmp_path):
    model_dir = tiny_models / "llama"
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    fresh = train(1, model_dir, straight, "training.max_steps=6", "training.save_steps=3",
                  "training.resume_from_checkpoint=latest")  # fmt: skip
    assert "resume 'latest': no checkpoint in" in fresh.stdout + fresh.stderr
    assert "starting fresh (step 0)" in fresh.stdout + fresh.stderr
    killed = train(1, model_dir, resumed, "training.max_steps=6", "training.save_steps=3",
                   env={"OUMI_MEGATRON_FAULT": "after_save:3"}, check=False)  # fmt: skip
    assert killed.returncode != 0, "the fault injection must kill the run after step 3"
    # Killed right after writing step_3, before logging it: the checkpoint carries that row.
    assert [r["step"] for r in metrics(resumed)] == [1, 2]
    assert (resumed / "checkpoints" / "step_3" / "trainer_state.json").exists()
    train(1, model_dir, resumed, "training.max_steps=6", "training.save_steps=3",
          "training.resume_from_checkpoint=latest")  # fmt: skip
    assert [r["step"] for r in metrics(resumed)] == [1, 2, 3, 4, 5, 6]
    assert_same_run(straight, resumed)


def test_kill_while_saving_keeps_previous_checkpoint(tiny_models, tmp_path):
    model_dir, out = tiny_models / "llama", tmp_path / "run"
    killed = train(1, model_dir, out, "training.max_steps=4", "training.save_steps=2",
                   env={"OUMI_MEGATRON_FAULT": "before_rename:4"}, check=False)  # fmt: skip
    assert killed.returncode != 0
    checkpoints = out / "checkpoints"
    assert (checkpoints / "step_2" / "trainer_state.json").exists()
    assert not (checkpoints / "step_4").exists()
    assert (checkpoints / ".step_4.tmp").exists(), "the interrupted save stays under its temp name"
    assert (checkpoints / "latest").read_text() == "step_2"
    train(1, model_dir, out, "training.max_steps=4", "training.save_steps=2",
          "training.try_resume_from_last_checkpoint=true")  # fmt: skip
    assert (checkpoints / "step_4" / "trainer_state.json").exists()
    assert [r["step"] for r in metrics(out)] == [1, 2, 3, 4]
    assert os.listdir(out / "hf_model")
    # `export --checkpoint` writes a training step's policy: step 4's is the final model.
    command = [str(TORCHRUN), "--standalone", "--nproc-per-node=1", "-m", "oumi_megatron",
               "export", "-c", str(RECIPE), f"--model.model_name={model_dir}",
               f"--training.output_dir={out}", "--checkpoint", "latest", *SMALL_RUN]  # fmt: skip
    proc = subprocess.run(command, env=quiet_env(), capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    final, step4 = load_weights(out / "hf_model"), load_weights(out / "hf_model_step_4")
    assert final.keys() == step4.keys() and all((final[k] == step4[k]).all() for k in final)

"""End-to-end GRPO runs through the CLI under torchrun (gloo): layouts, weight sync, resume."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
from pathlib import Path

import pytest
from helpers import (
    RECIPE,
    REPO,
    SMALL_RUN,
    TORCHRUN,
    assert_same_metrics,
    assert_same_run,
    load_weights,
    metrics,
    quiet_env,
    train,
)

# TP2×PP2 (4 processes, ~95 s of CI) is covered by the update-invariance and HF-parity tests;
# here each layout runs the whole trainer (~80 s each on 2 cores): TP2 runs in the two TP2_*
# layouts below, plain PP2 in PP2_gemma3.
LAYOUTS = {
    "DP2": (2, []),
    # With the KL in the reward (its log-probs on the last stage only).
    "PP2xVPP2": (
        2,
        [
            "megatron.pipeline_model_parallel_size=2",
            "megatron.virtual_pipeline_model_parallel_size=2",
            "grpo.kl_in_reward_coef=0.05",
        ],
    ),  # fmt: skip
    # Sequence parallelism; rollout in two separate processes, weights broadcast over gloo;
    # DAPO's dynamic sampling (rounds of generation from the workers), overlong filtering and
    # soft punishment.
    "TP2_gloo_2workers": (
        2,
        [
            "megatron.tensor_model_parallel_size=2",
            "megatron.sequence_parallel=true",
            "megatron.weight_sync_method=gloo",
            "megatron.rollout_workers=2",
            "grpo.dynamic_sampling=true",
            "grpo.overlong_filtering=true",
            "grpo.overlong_buffer={length: 2}",
            "grpo.loss_type=cispo",
        ],
    ),  # fmt: skip
    # Truncated sampling: the trainer's log-probs are of the engine's top-k/top-p distribution;
    # one rollout replica spanning the model-parallel group (rollout TP2); compiled layers.
    "TP2_topp_topk": (
        2,
        [
            "megatron.tensor_model_parallel_size=2",
            "grpo.top_p=0.9",
            "grpo.top_k=20",
            "megatron.rollout_tensor_parallel_size=2",
            "training.compile=true",
        ],
    ),  # fmt: skip
    # Each sequence in 4 chunks over 2 ranks (packed), K/V all-gathered in every layer; GSPO
    # and sequence-level rollout correction sum over each sequence's chunks.
    "CP2": (
        2,
        [
            "megatron.context_parallel_size=2",
            "grpo.loss_type=gspo",
            "grpo.rollout_correction={importance_sampling: sequence, rejection: geometric}",
        ],
    ),  # fmt: skip
    # Qwen3-MoE with its experts split over 2 ranks (router aux loss on, coefficient 1e-3).
    "EP2_moe": (2, ["megatron.expert_model_parallel_size=2"]),
    # DeepSeek-V3: multi-latent attention, a dense first layer, shared expert, sigmoid routing
    # with an expert bias, experts split over 2 ranks.
    "EP2_deepseek": (2, ["megatron.expert_model_parallel_size=2"]),
    # Gemma 3: sandwich and zero-centred norms, sliding windows in packed rows, embeddings
    # tied across the two pipeline stages (their gradients summed over the stages). Two
    # optimizer steps per GRPO step: old log-probs from a forward pass before the first.
    "PP2_gemma3": (
        2,
        ["megatron.pipeline_model_parallel_size=2", "megatron.global_batch_size=8"],
    ),  # fmt: skip
}
MODELS = {"EP2_moe": "qwen3_moe", "EP2_deepseek": "deepseek_v3", "PP2_gemma3": "gemma3"}
MOE = ("EP2_moe", "EP2_deepseek")  # the layouts above not in MODELS train llama


@pytest.fixture(scope="module")
def dp2_run(tiny_models, tmp_path_factory) -> Path:
    """A straight 4-step DP2 run: a layout case here and the reference of the preemption test.

    DP2 is a model-parallel group of one rank: the sync after step 1 records the copies, the
    ones after steps 2 and 3 copy straight from the parameters, steps 3 and 4 sample from that
    engine.
    """
    out = tmp_path_factory.mktemp("dp2") / "DP2"
    train(2, tiny_models / "llama", out, "training.max_steps=4")
    return out


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_layout_trains_syncs_and_exports(layout, tiny_models, tmp_path, request):
    nproc, overrides = LAYOUTS[layout]
    out = tmp_path / layout
    steps = 4 if layout == "DP2" else 2
    if layout == "DP2":
        out = request.getfixturevalue("dp2_run")
    else:
        model = tiny_models / MODELS.get(layout, "llama")
        proc = train(nproc, model, out, f"training.max_steps={steps}", *overrides)
        log = proc.stdout + proc.stderr
    rows = metrics(out)
    assert [r["step"] for r in rows] == list(range(1, steps + 1))
    direct = [r["sync/direct"] for r in rows]
    assert direct == ([0.0, 1.0, 1.0, 1.0] if layout == "DP2" else [0.0] * steps), direct
    first = rows[0]
    # Step 0, identical weights in trainer and engine (fp32); with two optimizer steps the
    # second mini-batch's ratio is to the weights before the first.
    if layout != "PP2_gemma3":  # its second optimizer step's ratio is to the first's weights
        assert abs(first["ratio/mean"] - 1.0) <= 1e-6
    assert first["mismatch/token_mult_prob_error"] <= 1.0001
    # Step 2's rollouts come from the engine after the weight sync of step 1.
    for row in rows:
        assert row["mismatch/max_abs_logprob_diff"] <= 1e-5, row
    if layout == "TP2_topp_topk":
        assert "training.compile: 4 transformer layer(s) under torch.compile" in log, log[-3000:]
        assert all(row["mismatch/outside_kept_frac"] == 0.0 for row in rows)
        assert all(row["entropy"] < math.log(20) for row in rows), "at most 20 tokens are kept"
    assert rows[1]["grad_norm"] > 0 and math.isfinite(rows[1]["loss/policy"])
    if layout == "PP2xVPP2":  # policy = reference at step 1; then a KL once the weights moved
        penalty = [row["kl_in_reward/penalty_mean"] for row in rows]
        assert penalty[0] <= 1e-9 and all(p >= 0 for p in penalty), penalty
        assert (penalty[1] > 1e-9) == (rows[0]["grad_norm"] > 0), (penalty, rows[0]["grad_norm"])
    if layout == "CP2":  # trainer and engine agree: weights 1, nothing rejected
        assert all(abs(row["rollout_correction/weight_mean"] - 1.0) <= 1e-4 for row in rows)
        assert all(row["rollout_correction/rejected_seq_frac"] == 0.0 for row in rows)
    if layout == "TP2_gloo_2workers":  # the batch keeps its size (16 sequences per rank)
        assert all(row["exchange/sequences_trained"] == 32 for row in rows)
        assert all(row["dynamic_sampling/rounds"] >= 1 for row in rows)
        assert all(row["reward/overlong_penalty_mean"] < 0 for row in rows)
    if layout in MOE:  # the aux loss is logged; experts come back in HF naming
        # Qwen3-MoE's aux loss is per micro-batch, DeepSeek-V3's per sequence (seq_aux_loss).
        kind = "seq_load_balancing_loss" if layout == "EP2_deepseek" else "load_balancing_loss"
        assert all(0 < row[f"moe/{kind}"] < 10 for row in rows)
        source = load_weights(tiny_models / MODELS[layout])
        exported = load_weights(out / "hf_model")
        assert exported.keys() == source.keys()
        assert any(".experts." in k for k in exported)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(out / "hf_model")
    tokenizer = AutoTokenizer.from_pretrained(out / "hf_model")
    prompt = tokenizer("What is 2 + 3?", return_tensors="pt")
    generated = model.generate(**prompt, max_new_tokens=4, do_sample=False)
    assert generated.shape[1] > prompt["input_ids"].shape[1], "the exported model must generate"
    assert (out / "reward_curve.png").exists()


# One-step off-policy GRPO: a rollout process generates step k+1 during step k's update.
ASYNC = ("grpo.max_off_policy_steps=1", "megatron.weight_sync_method=gloo")
COMPLETIONS = ("grpo.log_completions=true",)


def completions(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "completions.jsonl").read_text().splitlines() if x]


def test_resume_after_kill_equals_straight_run(tiny_models, tmp_path):
    """Async GRPO (the sigterm test below covers on-policy): the checkpoint after step 3 holds
    step 4's batch, generated during step 3; the resumed run trains on it. The logged
    completions of the resumed run are the straight run's, each step once."""
    model_dir = tiny_models / "llama"
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    fresh = train(1, model_dir, straight, "training.max_steps=6", "training.save_steps=3",
                  "training.resume_from_checkpoint=latest", *ASYNC, *COMPLETIONS)  # fmt: skip
    assert "resume 'latest': no checkpoint in" in fresh.stdout + fresh.stderr
    assert "starting fresh (step 0)" in fresh.stdout + fresh.stderr
    rows = metrics(straight)
    assert [r["async/staleness"] for r in rows] == [0.0] + [1.0] * 5
    assert any(r["mismatch/max_abs_logprob_diff"] > 1e-3 for r in rows), "stale rollouts"
    killed = train(1, model_dir, resumed, "training.max_steps=6", "training.save_steps=3",
                   *ASYNC, *COMPLETIONS, env={"OUMI_MEGATRON_FAULT": "after_save:3"},
                   check=False)  # fmt: skip
    assert killed.returncode != 0, "the fault injection must kill the run after step 3"
    # Killed right after writing step_3, before logging it: the checkpoint carries that row.
    assert [r["step"] for r in metrics(resumed)] == [1, 2]
    state = json.loads((resumed / "checkpoints" / "step_3" / "trainer_state.json").read_text())
    assert (
        state["in_flight"]["version"] == 2 and len(state["in_flight"]["batch"]["sample_ids"]) == 16
    )
    assert {r["step"] for r in completions(resumed)} == {1, 2, 3}  # logged before the save
    train(1, model_dir, resumed, "training.max_steps=6", "training.save_steps=3",
          "training.resume_from_checkpoint=latest", *ASYNC, *COMPLETIONS)  # fmt: skip
    assert [r["step"] for r in metrics(resumed)] == [1, 2, 3, 4, 5, 6]
    assert_same_run(straight, resumed)
    assert completions(resumed) == completions(straight)
    assert [r["step"] for r in completions(straight)] == [s for s in range(1, 7) for _ in range(16)]


def test_kill_while_saving_keeps_previous_checkpoint(tiny_models, tmp_path):
    """Also: a reward that fails on half of the samples is counted every step, stays below
    both bounds, and the run completes (each process counts its calls from zero)."""
    model_dir, out = tiny_models / "llama", tmp_path / "run"
    flaky = f"grpo.reward_functions=[{_reward_file(tmp_path)}:flaky,arithmetic_exact]"
    killed = train(1, model_dir, out, "training.max_steps=4", "training.save_steps=2", flaky,
                   env={"OUMI_MEGATRON_FAULT": "before_rename:4"}, check=False)  # fmt: skip
    assert killed.returncode != 0
    checkpoints = out / "checkpoints"
    assert (checkpoints / "step_2" / "trainer_state.json").exists()
    assert not (checkpoints / "step_4").exists()
    assert (checkpoints / ".step_4.tmp").exists(), "the interrupted save stays under its temp name"
    assert (checkpoints / "latest").read_text() == "step_2"
    train(1, model_dir, out, "training.max_steps=4", "training.save_steps=2", flaky,
          "training.try_resume_from_last_checkpoint=true")  # fmt: skip
    assert (checkpoints / "step_4" / "trainer_state.json").exists()
    assert [r["step"] for r in metrics(out)] == [1, 2, 3, 4]
    assert [r["reward/my_rewards.py:flaky/failures"] for r in metrics(out)] == [8, 8, 8, 8]
    assert os.listdir(out / "hf_model")
    # `export --checkpoint` writes a training step's policy: step 4's is the final model.
    command = [str(TORCHRUN), "--standalone", "--nproc-per-node=1", "-m", "oumi_megatron",
               "export", "-c", str(RECIPE), f"--model.model_name={model_dir}",
               f"--training.output_dir={out}", "--checkpoint", "latest", *SMALL_RUN]  # fmt: skip
    proc = subprocess.run(command, env=quiet_env(), capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    final, step4 = load_weights(out / "hf_model"), load_weights(out / "hf_model_step_4")
    assert final.keys() == step4.keys() and all((final[k] == step4[k]).all() for k in final)


def test_sigterm_saves_the_step_and_resume_equals_the_straight_run(dp2_run, tiny_models, tmp_path):
    """SIGTERM during a save (rank 0), during a rollout (rank 1 only), then to the torchrun
    agent (what a scheduler signals) in the middle of the update, which the agent passes on to
    both workers: each time every rank finishes the step, saves it and exits 75 within
    torchrun's grace period; resuming gives the straight run."""
    out, model_dir = tmp_path / "preempted", tiny_models / "llama"
    args = (
        "training.max_steps=4",
        "training.save_steps=1",
        "training.resume_from_checkpoint=latest",
    )
    during_save = train(2, model_dir, out, *args, env={"OUMI_MEGATRON_FAULT": "before_rename:1:TERM:0"},
                        check=False)  # fmt: skip
    log = during_save.stdout + during_save.stderr
    _assert_preempted_in_grace(log, step=1)
    assert (out / "checkpoints" / "latest").read_text() == "step_1"
    assert [r["step"] for r in metrics(out)] == [1] and not (out / "hf_model").exists()
    during_rollout = train(2, model_dir, out, *args, env={"OUMI_MEGATRON_FAULT": "rollout:2:TERM:1"},
                           check=False)  # fmt: skip
    log = during_rollout.stdout + during_rollout.stderr
    assert "after step 2" in log and "exitcode" in log, log[-3000:]
    assert (out / "checkpoints" / "latest").read_text() == "step_2"
    to_agent = train(2, model_dir, out, *args, check=False,
                     env={"OUMI_MEGATRON_FAULT": "update:3:TERM:0:launcher"})  # fmt: skip
    log = to_agent.stdout + to_agent.stderr
    assert to_agent.returncode != 0 and "fault injection: SIGTERM to the launcher" in log, log[
        -3000:
    ]
    _assert_preempted_in_grace(log, step=3, agent_signalled=True)
    assert (out / "checkpoints" / "latest").read_text() == "step_3"
    assert_same_metrics(metrics(dp2_run)[:3], metrics(out))
    train(2, model_dir, out, *args)
    assert_same_run(dp2_run, out)


def _assert_preempted_in_grace(log: str, step: int, agent_signalled: bool = False) -> None:
    """Stopped after ``step`` within torchrun's grace period, exit code 75 (an agent that got
    the signal itself reports its own signal instead of its workers' codes)."""
    if not agent_signalled:
        assert "exitcode  : 75" in log or "exitcode: 75" in log, log[-3000:]
    stopped = re.search(
        rf"preempted by SIGTERM after step {step} \(([\d.]+) s after the signal\)", log
    )
    assert stopped and float(stopped.group(1)) < 30, log[-3000:]  # torchrun's grace period


def _reward_file(directory: Path) -> Path:
    reward_file = directory / "my_rewards.py"
    reward_file.write_text(
        "def broken(completions, prompts=None, **kwargs):\n"
        "    raise ZeroDivisionError('no score for you')\n"
        "\n"
        "def flaky(completions, prompts=None, **kwargs):  # fails on every other sample\n"
        "    if len(completions) > 1:\n"
        "        raise RuntimeError('batch call fails')\n"
        "    flaky.calls = getattr(flaky, 'calls', 0) + 1\n"
        "    if flaky.calls % 2:\n"
        "        raise ValueError('odd call')\n"
        "    return [1.0]\n"
    )
    return reward_file


def test_a_reward_that_always_fails_stops_the_run(tiny_models, tmp_path):
    """(A reward failing on half of the samples: test_kill_while_saving_keeps_previous_checkpoint.)"""
    out = tmp_path / "run"
    proc = train(1, tiny_models / "llama", out, "training.max_steps=3",
                 f"grpo.reward_functions=[{_reward_file(tmp_path)}:broken,arithmetic_exact]",
                 check=False)  # fmt: skip
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "exitcode  : 3" in log, log[-3000:]
    assert "my_rewards.py:broken' failed on 16 samples (100%) at step 1" in log, log[-3000:]
    assert "no score for you" in log
    assert [r["step"] for r in metrics(out)] == [1]  # the stopping step's metrics are logged
    assert metrics(out)[0]["reward/my_rewards.py:broken/failures"] == 16
    assert not (out / "hf_model").exists()

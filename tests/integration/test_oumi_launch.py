"""Oumi's own entry points run MEGATRON_GRPO: `oumi train -c` (one process),
`oumi distributed torchrun -m oumi train -c` (one node, two processes; the two-node case is in
test_rollout_workers.py) and, from Python, `oumi.train(config)` and `OumiMegatronGrpoTrainer(config)`.
Overrides are given in Oumi's forms (--a.b c, --a.b=c) and ours (a.b=c)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import (
    RECIPE,
    REPO,
    SMALL_RUN,
    TORCHRUN,
    assert_same_metrics,
    load_weights,
    metrics,
    quiet_env,
)

VENV_BIN = Path(TORCHRUN).parent
STEPS = ["training.max_steps=2", "training.save_steps=0"]
# One epoch of 8 prompts at 4 per step = 2 steps; Oumi's zephyr template for the prompts.
# Held-out prompts (another seed), evaluated greedily after every step.
EPOCH = ["training.max_steps=-1", "training.num_train_epochs=1",
         "data.train.datasets[0].dataset_kwargs.num_examples=8", "model.chat_template=zephyr",
         "grpo.log_completions=true",
         "data.validation.datasets=[{dataset_name: arithmetic_synthetic, seed: 7, "
         "dataset_kwargs: {num_examples: 6}}]",
         "training.eval_strategy=steps", "training.eval_steps=1"]  # fmt: skip


def _oumi_forms(overrides: list[str]) -> list[str]:
    """a.b=c as --a.b c and --a.b=c, alternately (Oumi's two CLI forms)."""
    out: list[str] = []
    for i, item in enumerate(overrides):
        key, _, value = item.partition("=")
        out += [f"--{key}", value] if i % 2 else [f"--{key}={value}"]
    return out


def _run(command: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**quiet_env(), "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", **(env or {})}
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900, cwd=REPO)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    return proc


@pytest.fixture(scope="module")
def runs(tiny_models, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("oumi_entry")
    model = tiny_models / "llama"
    common = [f"model.model_name={model}", *SMALL_RUN, *STEPS]
    cli = _run([str(VENV_BIN / "oumi"), "train", "-c", str(RECIPE),
          *_oumi_forms([f"training.output_dir={root / 'cli'}", *common[:4]]), *common[4:], *EPOCH])  # fmt: skip
    dist = _run([str(VENV_BIN / "oumi"), "distributed", "torchrun", "-m", "oumi", "train",
          "-c", str(RECIPE), *_oumi_forms([f"training.output_dir={root / 'dist'}", *common, *EPOCH,
                                           "training.save_final_model=false"])],
         env={"SKYPILOT_NODE_RANK": "0", "SKYPILOT_NODE_IPS": "127.0.0.1",
              "SKYPILOT_NUM_GPUS_PER_NODE": "2", "MASTER_PORT": str(_free_port())})  # fmt: skip
    api = _run([sys.executable, str(REPO / "tests" / "integration" / "api_worker.py"), str(model),
                str(root / "api_recipe"), str(root / "api_built"), str(root / "api_other"),
                *SMALL_RUN, *STEPS, *EPOCH])  # fmt: skip
    last = next(line for line in api.stdout.splitlines() if line.startswith("LAST_METRICS "))
    (root / "api_built" / "last_metrics.json").write_text(last.removeprefix("LAST_METRICS "))
    (root / "cli" / "console.txt").write_text(cli.stdout + cli.stderr)
    (root / "dist" / "console.txt").write_text(dist.stdout + dist.stderr)
    return {name: root / name for name in ("cli", "dist", "api_recipe", "api_built", "api_other")}


def _free_port() -> int:
    from oumi_megatron.processes import free_port

    return free_port()


def test_oumi_train_is_our_trainer(runs):
    """`oumi train -c` with Oumi-style overrides == `oumi.train(config)` from Python."""
    rows = metrics(runs["cli"])
    assert [r["step"] for r in rows] == [1, 2]
    assert rows[-1]["grad_norm"] > 0
    assert_same_metrics(rows, metrics(runs["api_recipe"]))
    wa, wb = load_weights(runs["cli"] / "hf_model"), load_weights(runs["api_recipe"] / "hf_model")
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) == 0.0


@pytest.mark.parametrize(("run", "layout"), [("cli", "1 process(es)"), ("dist", "2 process(es)")])
def test_console_is_quiet_and_says_what_runs(runs, run, layout):
    """From our start on, on 1 and 2 ranks: no warning of any level or case, no traceback; the
    layout first, a summary last."""
    console = (runs[run] / "console.txt").read_text()
    ours = console[console.index(" oumi_megatron.") :]  # before it: Oumi's own start-up
    warnings = [line for line in ours.splitlines() if re.search("warn", line, re.IGNORECASE)]
    assert not warnings, warnings[:5]
    assert "Traceback" not in ours and "Loading weights" not in ours
    for line in (f"layout: {layout} on CPU: TP1×PP1×DP", "4 generations = ",
                 "steps: 2 (1 epoch(s) of 8 prompts)", "run: 2 step(s) in",
                 "reward/mean: first 2 step(s)", "outputs: "):  # fmt: skip
        assert line in ours, line


def test_epochs_and_chat_template_act(runs):
    """max_steps -1 trains one epoch (8 prompts, 4 per step: 2 steps, each prompt once);
    model.chat_template renders the prompts and ships with the exported tokenizer."""
    completions = [
        json.loads(x) for x in (runs["cli"] / "completions.jsonl").read_text().split("\n") if x
    ]
    prompts = {c["prompt"] for c in completions}
    assert len(prompts) == 8 and len(completions) == 8 * 4
    assert all(p.startswith("<|user|>\n") and p.endswith("<|assistant|>\n") for p in prompts)
    from transformers import AutoTokenizer

    exported = AutoTokenizer.from_pretrained(runs["cli"] / "hf_model")
    assert "<|assistant|>" in exported.chat_template


def test_evaluation_runs_on_held_out_prompts(runs):
    """Every step evaluates the 6 held-out prompts greedily; the same figures on 1 and 2 ranks
    (2 replicas of 3 prompts) at step 1, where both evaluate the same weights."""
    one, two = metrics(runs["cli"]), metrics(runs["dist"])
    assert all(r["eval/prompts"] == 6 for r in one + two)
    keys = [k for k in one[0] if k.startswith("eval/")]
    assert {"eval/reward/mean", "eval/accuracy", "eval/reward/arithmetic_dense/mean",
            "eval/response_length/mean"} <= set(keys)  # fmt: skip
    assert {k: one[0][k] for k in keys} == pytest.approx({k: two[0][k] for k in keys}, abs=1e-9)
    assert all(r["time/eval"] > 0 and r["time/release"] >= 0 for r in one)
    held_out = {c["prompt"] for c in _completions(runs["cli"])}
    assert len(held_out) == 8  # training prompts only: evaluation is not logged as completions


def _completions(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "completions.jsonl").read_text().splitlines() if x]


def test_oumi_distributed_torchrun_two_processes(runs):
    one, two = metrics(runs["cli"]), metrics(runs["dist"])
    assert [r["step"] for r in two] == [1, 2]
    assert two[0]["rollout/replicas"] == 2 and one[0]["rollout/replicas"] == 1
    # Samples depend on prompts and seeds only: the first step is the same on 1 and 2 ranks.
    assert two[0]["reward/mean"] == one[0]["reward/mean"]
    for key in ("loss/policy", "grad_norm"):
        assert two[0][key] == pytest.approx(one[0][key], rel=1e-5, abs=1e-7), key
    assert not (runs["dist"] / "hf_model").exists()  # training.save_final_model: false


def test_trainer_built_from_oumi_dataclasses(runs):
    """OumiMegatronGrpoTrainer(config) from Oumi's dataclasses; save_model(other, final=False)
    exports under the other config's output_dir, named by step."""
    built, other = runs["api_built"], runs["api_other"]
    assert [r["step"] for r in metrics(built)] == [1]
    step_export = other / "hf_model_step_1"
    assert sorted(p.name for p in other.iterdir()) == ["hf_model_step_1"]
    wa, wb = load_weights(built / "hf_model"), load_weights(step_export)
    assert wa.keys() == wb.keys() and all((wa[k] == wb[k]).all() for k in wa)
    last = json.loads((built / "last_metrics.json").read_text())
    assert last["grad_norm"] == metrics(built)[0]["grad_norm"]

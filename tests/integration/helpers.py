"""Launching torchrun workers and GRPO training runs from tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TORCHRUN = Path(sys.executable).with_name("torchrun")
RECIPE = REPO / "configs" / "recipes" / "tiny_grpo_cpu.yaml"
SMALL_RUN = [
    "grpo.prompts_per_step=4",
    "grpo.num_generations=4",
    "grpo.max_completion_length=6",
    "megatron.global_batch_size=16",
    "megatron.micro_batch_size=4",
    "megatron.max_tokens_per_microbatch=128",
    "training.enable_tensorboard=false",
]
# Wall-clock and throughput differ between runs; everything else must match exactly.
# Timings, and how the weights reached the engine (a resumed run's first sync records the
# copies again, where the straight run already copies directly): not part of "the same run".
NONDETERMINISTIC = ("time", "time/", "perf/", "reward/arithmetic_dense/seconds",
                    "reward/arithmetic_exact/seconds", "sync/direct", "sync/buckets",
                    "sync/weights_s", "sync/copy_s", "sync/wake_s")  # fmt: skip


def quiet_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DO_NOT_TRACK="1",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        WANDB_MODE="offline",
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO / "tests" / "integration")]),
    )
    return env


def torchrun(
    nproc: int, script: Path, *args: str, timeout: int = 900
) -> subprocess.CompletedProcess:
    """Run `script` under torchrun with gloo; fails the test with the tail of its log."""
    command = [str(TORCHRUN), "--standalone", f"--nproc-per-node={nproc}", str(script), *args]
    proc = subprocess.run(
        command, env=quiet_env(), capture_output=True, text=True, timeout=timeout, cwd=REPO
    )
    if proc.returncode != 0:
        pytest.fail(f"torchrun failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-6000:]}")
    return proc


def train(nproc: int, model_dir: Path, output_dir: Path, *overrides: str, env=None, check=True):
    """`oumi_megatron train` of the tiny demo recipe (SMALL_RUN) under torchrun."""
    command = [str(TORCHRUN), "--standalone", f"--nproc-per-node={nproc}", "-m", "oumi_megatron",
               "train", "-c", str(RECIPE), f"model.model_name={model_dir}",
               f"training.output_dir={output_dir}", *SMALL_RUN, *overrides]  # fmt: skip
    proc = subprocess.run(command, env={**quiet_env(), **(env or {})}, capture_output=True,
                          text=True, timeout=900, cwd=REPO)  # fmt: skip
    if check and proc.returncode != 0:
        pytest.fail(f"train failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-6000:]}")
    return proc


def metrics(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]


def load_weights(directory: Path) -> dict:
    from safetensors.torch import load_file

    merged: dict = {}
    for f in sorted(directory.glob("*.safetensors")):
        merged.update(load_file(f))
    return merged


def assert_same_metrics(expected: list[dict], actual: list[dict]) -> None:
    """The same steps with the same metrics (≤ 1e-6), timings aside."""
    assert [r["step"] for r in actual] == [r["step"] for r in expected]
    for row_a, row_b in zip(expected, actual, strict=True):
        ca, cb = _comparable(row_a), _comparable(row_b)
        assert ca.keys() == cb.keys()
        for key in ca:
            assert ca[key] == pytest.approx(cb[key], abs=1e-6), (row_a["step"], key)


def assert_same_run(expected: Path, actual: Path) -> None:
    """Same metrics at every step and identical exported weights."""
    assert_same_metrics(metrics(expected), metrics(actual))
    wa, wb = load_weights(expected / "hf_model"), load_weights(actual / "hf_model")
    assert wa.keys() == wb.keys()
    assert all((wa[k] == wb[k]).all() for k in wa), "weights must be identical"


def _comparable(row: dict) -> dict:
    return {k: v for k, v in row.items() if not k.startswith(NONDETERMINISTIC)}

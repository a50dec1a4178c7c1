"""Disaggregated rollout (megatron.rollout_nodes): two torchrun "nodes" on localhost started by
Oumi's launcher, the trainer (DP2) on one, two rollout workers on the other, weights over gloo.
The run equals a colocated DP2 run step for step; a worker that fails, goes silent or is too
slow fails the step with a message naming it."""

from __future__ import annotations

import json
import os
import subprocess
import time
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
    train,
)

STEPS = ["training.max_steps=2", "grpo.log_completions=true"]
LAYOUT_METRICS = ("rollout/", "exchange/", "sync/")


def _free_port() -> int:
    from oumi_megatron.processes import free_port

    return free_port()


def _oumi_two_nodes(model_dir: Path, out: Path, *overrides: str) -> list[subprocess.Popen]:
    """`oumi distributed torchrun -m oumi train` on two SkyPilot-described nodes, both on
    localhost."""
    venv_bin = Path(TORCHRUN).parent
    port = _free_port()
    env = {**quiet_env(), "PATH": f"{venv_bin}{os.pathsep}{os.environ['PATH']}",
           "SKYPILOT_NODE_IPS": "127.0.0.1\n127.0.0.1", "SKYPILOT_NUM_GPUS_PER_NODE": "2",
           "MASTER_PORT": str(port), "OUMI_MEGATRON_ROLLOUT_PORT": str(_free_port())}  # fmt: skip
    # Oumi's own `oumi train` on every rank, overrides in Oumi's forms and ours.
    command = [str(venv_bin / "oumi"), "distributed", "torchrun", "-m", "oumi", "train",
               "-c", str(RECIPE), "--model.model_name", str(model_dir),
               f"--training.output_dir={out}", *SMALL_RUN, *STEPS, "--megatron.rollout_nodes", "1",
               "megatron.weight_sync_method=gloo", *overrides]  # fmt: skip
    logs = [open(out.parent / f"{out.name}_node{rank}.log", "w") for rank in (0, 1)]  # noqa: SIM115
    return [
        subprocess.Popen(
            command,
            env={**env, "SKYPILOT_NODE_RANK": str(rank)},
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        for rank, log in zip((0, 1), logs, strict=True)
    ]


def _wait(procs: list[subprocess.Popen], timeout: float = 900) -> list[int]:
    deadline = time.monotonic() + timeout
    codes = []
    for proc in procs:
        try:
            codes.append(proc.wait(max(deadline - time.monotonic(), 1)))
        except subprocess.TimeoutExpired:
            proc.kill()
            codes.append(proc.wait())
    return codes


def _log(out: Path, rank: int) -> str:
    return (out.parent / f"{out.name}_node{rank}.log").read_text()


@pytest.fixture(scope="module")
def runs(tiny_models, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("workers")
    colocated, disaggregated = root / "colocated", root / "disaggregated"
    train(2, tiny_models / "llama", colocated, *STEPS)
    codes = _wait(_oumi_two_nodes(tiny_models / "llama", disaggregated))
    assert codes == [0, 0], _log(disaggregated, 0)[-4000:] + _log(disaggregated, 1)[-4000:]
    return {"colocated": colocated, "disaggregated": disaggregated}


def _completions(run: Path) -> list[tuple[int, str]]:
    rows = [json.loads(line) for line in (run / "completions.jsonl").read_text().splitlines()]
    return [(r["sequence"], r["completion"]) for r in rows]


def test_rollout_nodes_give_the_colocated_run(runs):
    colocated, disaggregated = runs["colocated"], runs["disaggregated"]
    assert _completions(disaggregated) == _completions(colocated)
    strip = [
        {k: v for k, v in r.items() if not k.startswith(LAYOUT_METRICS)} for r in metrics(colocated)
    ]
    other = [
        {k: v for k, v in r.items() if not k.startswith(LAYOUT_METRICS)}
        for r in metrics(disaggregated)
    ]
    assert_same_metrics(strip, other)
    rows = metrics(disaggregated)
    assert rows[-1]["grad_norm"] > 0
    assert rows[-1]["mismatch/max_abs_logprob_diff"] <= 1e-5, "step 2 samples the synced weights"
    assert all(r["rollout/replicas"] == 1 for r in rows)  # rank 0 feeds the workers
    assert all(r["exchange/sequences_received"] == r["exchange/sequences_trained"] for r in rows)
    assert all(r["sync/bytes"] > 0 for r in rows)
    wa, wb = load_weights(colocated / "hf_model"), load_weights(disaggregated / "hf_model")
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) <= 1e-6
    assert "rollout worker 1: ready" in _log(disaggregated, 1)


# ---- failures, with the worker in a process of its own ------------------------------------------

_WORKER = """
import sys, time
from oumi_megatron.rollout.factory import EngineSpec
from oumi_megatron.rollout.workers import WorkerAddress, serve_rollout_worker
model, port, fault = sys.argv[1], int(sys.argv[2]), sys.argv[3]
address = WorkerAddress("127.0.0.1", port, 1, timeout_s=60)
if fault == "bad_model":
    model = model + "/missing"
if fault == "slow":
    from oumi_megatron.rollout.torch_engine import TorchRolloutEngine
    original = TorchRolloutEngine.generate
    TorchRolloutEngine.generate = lambda *a, **k: (time.sleep(30), original(*a, **k))[1]
serve_rollout_worker(EngineSpec("torch", model), "gloo", address, 0)
"""


def _start_worker(model_dir: Path, port: int, fault: str) -> subprocess.Popen:
    import sys

    return subprocess.Popen([sys.executable, "-c", _WORKER, str(model_dir), str(port), fault],
                            env=quiet_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("bad_model", r"rollout worker 0 failed \(start\)"),
        ("killed", r"rollout worker 0 stopped answering \(generate\)"),
        ("slow", r"rollout worker 0 did not answer within 5 s \(generate\)"),
    ],
)
def test_a_failing_worker_fails_the_step_naming_it(tiny_models, fault, message, monkeypatch):
    import signal

    from oumi_megatron.rollout import SamplingParams
    from oumi_megatron.rollout import workers as workers_module
    from oumi_megatron.rollout.remote import RolloutProcessError
    from oumi_megatron.rollout.workers import RolloutWorkers, WorkerAddress

    monkeypatch.setattr(workers_module, "SILENCE_S", 3.0)
    port = _free_port()
    proc = _start_worker(tiny_models / "llama", port, fault)
    try:
        with pytest.raises(RolloutProcessError, match=message):
            workers = RolloutWorkers(WorkerAddress("127.0.0.1", port, 1, 120), "gloo", 1 << 20)
            workers.timeout_s = 5  # per reply, once started
            if fault == "killed":
                os.kill(proc.pid, signal.SIGKILL)
            workers.generate([[5, 6, 7]], SamplingParams(n=2, max_new_tokens=4, seed=1))
    finally:
        proc.kill()
        proc.wait()

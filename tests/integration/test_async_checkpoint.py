"""Asynchronous checkpoints (megatron.checkpoint_config.use_async_checkpoint) on 2 gloo ranks.

An async run must train exactly like the synchronous one, publish a checkpoint only once every
rank's shards are written, and survive a SIGKILL while a save is still being written: the run
killed during step 6's save, then resumed (each saving asynchronously), equals the sync run.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from helpers import assert_same_metrics, assert_same_run, metrics, train

RUN = ["training.max_steps=6", "training.save_steps=3"]
ASYNC = "megatron.checkpoint_config.use_async_checkpoint=true"
# DP2: the fully parallel strategy (default) spreads the shard writes over both ranks.
NPROC = 2


@pytest.fixture(scope="module")
def sync_run(tiny_models, tmp_path_factory):
    out = tmp_path_factory.mktemp("sync") / "run"
    train(NPROC, tiny_models / "llama", out, *RUN)
    return out


@pytest.fixture(scope="module")
def killed_async_run(tiny_models, tmp_path_factory):
    """Async run SIGKILLed right after handing step 6's save to its writer."""
    out = tmp_path_factory.mktemp("async_killed") / "run"
    killed = train(NPROC, tiny_models / "llama", out, *RUN, ASYNC,
                   env={"OUMI_MEGATRON_FAULT": "after_schedule:6"}, check=False)  # fmt: skip
    assert killed.returncode != 0, "the fault injection must kill the run at step 6's save"
    return out


def test_kill_during_async_save_keeps_previous_checkpoint(sync_run, killed_async_run):
    checkpoints = killed_async_run / "checkpoints"
    assert (checkpoints / "latest").read_text() == "step_3"
    assert (checkpoints / "step_3" / "trainer_state.json").exists()
    assert not (checkpoints / "step_6").exists(), "an unfinished save must not be published"
    assert (checkpoints / ".step_6.tmp").exists()
    assert not (checkpoints / ".step_6.tmp" / "trainer_state.json").exists()
    # Up to the kill, the async run trained exactly like the synchronous one.
    assert_same_metrics(metrics(sync_run)[:5], metrics(killed_async_run))


def test_resume_from_async_checkpoint_equals_sync_run(
    sync_run, killed_async_run, tiny_models, tmp_path
):
    """Async saves on both sides of the kill: step 3's by the killed run, step 6's by the
    resumed one. The pair trains exactly like the synchronous run and saves the same state."""
    out = tmp_path / "resumed"
    shutil.copytree(killed_async_run, out)  # the killed run stays as it was for the test above
    proc = train(NPROC, tiny_models / "llama", out, *RUN, ASYNC,
                 "training.resume_from_checkpoint=latest")  # fmt: skip
    assert "finalized 1 async checkpoint save(s)" in proc.stdout + proc.stderr
    assert_same_run(sync_run, out)
    checkpoints = out / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["latest", "step_3", "step_6"]
    assert (checkpoints / "latest").read_text() == "step_6"
    # Non-tensor state is the one captured at the save, not at the (later) finalize: by then
    # the prompt loader and the scheduler have moved on. Of the RNG states only Megatron's
    # seeded tracker is the same across runs (Python's and torch's default generators are
    # not seeded by the trainer).
    for step in ("step_3", "step_6"):
        expected_state, actual_state = (
            json.loads((root / step / "trainer_state.json").read_text())
            for root in (sync_run / "checkpoints", checkpoints)
        )
        for key in ("step", "loader", "scheduler"):
            assert expected_state[key] == actual_state[key], (step, key)
        for r in range(NPROC):
            name = f"rng_state_rank{r}.pt"
            expected = torch.load(sync_run / "checkpoints" / step / name, weights_only=True)
            actual = torch.load(checkpoints / step / name, weights_only=True)
            assert expected["tracker"].keys() == actual["tracker"].keys()
            for stream, state in expected["tracker"].items():
                assert torch.equal(state, actual["tracker"][stream]), (step, name, stream)

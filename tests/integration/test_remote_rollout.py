"""Rollout engines in separate processes (gloo): same samples as in-process, exact weight sync,
prompt order kept across several processes, a dead process reported by its exit code."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import torch

from oumi_megatron.rollout import SamplingParams
from oumi_megatron.rollout.factory import EngineSpec
from oumi_megatron.rollout.remote import RemoteRolloutEngines, RolloutProcessError
from oumi_megatron.rollout.torch_engine import TorchRolloutEngine

PROMPTS = [[5, 6, 7], [8, 9, 10, 11, 12, 13], [14], [15, 16]]
PARAMS = SamplingParams(n=2, temperature=0.9, max_new_tokens=6, seed=3)
BUCKET_BYTES = 96 * 1024  # about ten buckets for the tiny model


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from oumi_megatron.testing.tiny_models import build_tiny_pair

    root = tmp_path_factory.mktemp("remote")
    return build_tiny_pair("llama", root)


def _as_tuples(samples):
    return [(s.prompt_index, s.sample_index, s.completion_ids, s.completion_logprobs)
            for s in samples]  # fmt: skip


@pytest.mark.slow
def test_one_process_matches_in_process_engine_and_syncs_exactly(models):
    model_a, model_b = models
    local = TorchRolloutEngine(model_a)
    remote = RemoteRolloutEngines(
        [EngineSpec("torch", str(model_b))], "gloo", BUCKET_BYTES, colocated=True
    )
    try:
        before = remote.generate(PROMPTS, PARAMS)  # model B: differs from A
        assert _as_tuples(before) != _as_tuples(local.generate(PROMPTS, PARAMS))
        weights = dict(local.model.state_dict())
        stats = remote.weight_sender().send(weights.items())
        assert stats.num_buckets >= 3 and stats.num_tensors == len(weights)
        # Same weights, same kernels, same seed: bit-equal samples and logprobs.
        assert _as_tuples(remote.generate(PROMPTS, PARAMS)) == _as_tuples(
            local.generate(PROMPTS, PARAMS)
        )
        remote.sleep()
        remote.wake_up()
    finally:
        remote.close()
    assert all(not p.is_alive() for p in remote._procs)


@pytest.mark.slow
def test_two_processes_keep_prompt_order_receive_and_report_death(models):
    model_a, _ = models
    local = TorchRolloutEngine(model_a)
    specs = [EngineSpec("torch", str(models[1]))] * 2
    remote = RemoteRolloutEngines(specs, "gloo", BUCKET_BYTES)
    try:
        remote.weight_sender().send(local.model.state_dict().items())
        samples = remote.generate(PROMPTS, PARAMS)
        assert [(s.prompt_index, s.sample_index) for s in samples] == [
            (p, k) for p in range(len(PROMPTS)) for k in range(PARAMS.n)
        ]
        # Each completion's logprobs are what the synced weights give (teacher-forced).
        from oumi_megatron.rollout.logprob_check import teacher_forced_logprobs

        recomputed = teacher_forced_logprobs(local.model, samples, PARAMS)
        for sample, lp in zip(samples, recomputed, strict=True):
            assert torch.allclose(torch.tensor(sample.completion_logprobs), lp, atol=1e-5)
        # A rollout process that dies is reported by the next call, with its exit code.
        os.kill(remote.pids[1], signal.SIGKILL)
        remote._procs[1].join(10)
        with pytest.raises(RolloutProcessError, match=r"rollout process 1 exited \(code -9\)"):
            remote.generate(PROMPTS, PARAMS)
    finally:
        remote.close()


def test_bad_model_dir_fails_at_start(tmp_path):
    with pytest.raises(RolloutProcessError, match="rollout process 0 failed"):
        RemoteRolloutEngines([EngineSpec("torch", str(tmp_path / "missing"))], "gloo", 1 << 20)


def test_a_rollout_process_sees_only_its_gpu(monkeypatch):
    from oumi_megatron.rollout.remote import _environment, _only_its_gpu

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6")
    visible, spec = _only_its_gpu(EngineSpec("vllm", "m", device="cuda:1"))
    assert (visible, spec.device) == ("5", "cuda:0")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert _only_its_gpu(EngineSpec("vllm", "m", device="cuda:3"))[0] == "3"
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 2)  # plain "cuda": the current GPU
    assert _only_its_gpu(EngineSpec("vllm", "m", device="cuda")) == (
        "2", EngineSpec("vllm", "m", device="cuda:0"),
    )  # fmt: skip
    assert _only_its_gpu(EngineSpec("torch", "m", device="cpu")) == (
        None, EngineSpec("torch", "m", device="cpu"),
    )  # fmt: skip
    # The variable is set only while the process starts, then restored (here: absent again).
    with _environment(CUDA_VISIBLE_DEVICES="3"):
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    with _environment(CUDA_VISIBLE_DEVICES=None):
        assert "CUDA_VISIBLE_DEVICES" not in os.environ


_TCP_INIT = """
import datetime, sys, torch.distributed as dist
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{sys.argv[1]}", rank=0,
                        world_size=1, timeout=datetime.timedelta(seconds=3))
print("joined")
"""


def _tcp_init_in_child(env: dict[str, str]) -> subprocess.CompletedProcess:
    """A one-process ``tcp://`` world (as vLLM starts one) in a fresh interpreter."""
    from oumi_megatron.processes import free_port

    command = [sys.executable, "-c", _TCP_INIT, str(free_port())]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def test_rollout_processes_leave_the_torchrun_world(monkeypatch):
    from oumi_megatron.rollout.remote import leave_launcher_world

    torchrun = {"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2", "MASTER_PORT": "29500",
                "TORCHELASTIC_USE_AGENT_STORE": "True", "TORCHELASTIC_RUN_ID": "x"}  # fmt: skip
    for name, value in torchrun.items():
        monkeypatch.setenv(name, value)
    # The hazard: with torchrun's agent-store flag, a tcp:// world of one never forms.
    assert "joined" not in _tcp_init_in_child(dict(os.environ)).stdout
    leave_launcher_world()
    assert not set(torchrun) & set(os.environ)
    assert "joined" in _tcp_init_in_child(dict(os.environ)).stdout


def test_a_process_that_does_not_start_in_time_is_killed(models):
    # Spawning and importing take seconds: a 0.5 s start-up budget must run out.
    with pytest.raises(RolloutProcessError, match=r"did not start within 0 s \(killed\)"):
        RemoteRolloutEngines([EngineSpec("torch", str(models[0]))], "gloo", 1 << 20, timeout_s=0.5)

"""Rollout processes on GPU 1 fed over NCCL from GPU 0 (needs 2 GPUs).

The same checks as the gloo CPU tests (tests/integration/test_remote_rollout.py), on the path
the trainer takes with ``weight_sync_method: nccl``: a torch engine (fp32, exact) and a vLLM
engine (bf16, as the trainer runs it) in a separate process see the synced weights, the process
takes memory on its own GPU only, and each start-up time is printed.

vLLM runs in bf16: in fp32 vLLM 0.26 can only use its FLEX_ATTENTION backend, whose forward hit
an illegal memory access on an H200 in any process (docs/benchmarks.md, GPU third round).
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import pytest
import torch

from oumi_megatron.rollout import SamplingParams
from oumi_megatron.rollout.factory import EngineSpec
from oumi_megatron.rollout.logprob_check import teacher_forced_logprobs
from oumi_megatron.rollout.remote import RemoteRolloutEngines

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs"),
]

PROMPTS = [[5, 6, 7], [8, 9, 10, 11, 12, 13], [14], [15, 16]]
PARAMS = SamplingParams(n=2, temperature=0.9, max_new_tokens=12, seed=3)
BUCKET_BYTES = 96 * 1024  # several buckets for the tiny model
# Max |Δ logp| against the source model: torch engine fp32 (batched KV-cache decoding vs one
# full forward); vLLM bf16 against the bf16-rounded source in fp32 arithmetic (as in
# test_vllm_engine.py).
TOLERANCE = {"torch": 1e-4, "vllm": 6e-2}
DTYPE = {"torch": "fp32", "vllm": "bf16"}


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[Path, Path]:
    from oumi_megatron.testing.tiny_models import build_tiny_pair

    root = tmp_path_factory.mktemp("remote_nccl")
    return build_tiny_pair("qwen2", root)


@pytest.fixture(scope="module")
def source(models):
    """Model A on GPU 0, fp32 without TF32: the weights sent and the logprob reference."""
    from transformers import AutoModelForCausalLM

    torch.cuda.set_device(0)
    torch.backends.cuda.matmul.allow_tf32 = False
    return AutoModelForCausalLM.from_pretrained(str(models[0]), dtype=torch.float32).cuda().eval()


def _reference(source, backend: str):
    """What the rollout engine holds after the sync: the source, bf16-rounded for vLLM."""
    if DTYPE[backend] == "fp32":
        return source
    return copy.deepcopy(source).to(torch.bfloat16).float()


def _max_diff(model, samples) -> float:
    refs = teacher_forced_logprobs(model, samples, PARAMS)
    return max(
        (torch.tensor(s.completion_logprobs) - r).abs().max().item()
        for s, r in zip(samples, refs, strict=True)
    )


def _start(spec: EngineSpec) -> tuple[RemoteRolloutEngines, float]:
    """Start the rollout process; it must take memory on GPU 1 only (its own GPU)."""
    free_before = [torch.cuda.mem_get_info(i)[0] for i in (0, 1)]
    start = time.perf_counter()
    engines = RemoteRolloutEngines([spec], "nccl", BUCKET_BYTES, timeout_s=300)
    startup_s = time.perf_counter() - start
    taken = [(b - torch.cuda.mem_get_info(i)[0]) / 2**20 for i, b in enumerate(free_before)]
    print(f"{spec.backend}: memory taken at start-up, GPU 0 {taken[0]:.0f} MiB, "
          f"GPU 1 {taken[1]:.0f} MiB")  # fmt: skip
    assert taken[1] > 100 and taken[0] < 100, taken
    return engines, startup_s


@pytest.mark.parametrize("backend", ["torch", "vllm"])
def test_rollout_process_on_gpu1_receives_weights_over_nccl(backend, models, source):
    if backend == "vllm":
        pytest.importorskip("vllm")
    spec = EngineSpec(
        backend, str(models[1]), device="cuda:1", dtype=DTYPE[backend],
        vllm_gpu_memory_utilization=0.3, vllm_enforce_eager=True, max_model_len=256,
    )  # fmt: skip
    engines, startup_s = _start(spec)
    try:
        reference = _reference(source, backend)
        before = engines.generate(PROMPTS, PARAMS)  # model B
        assert _max_diff(reference, before) > 0.3
        start = time.perf_counter()
        stats = engines.weight_sender().send(source.state_dict().items())
        sync_s = time.perf_counter() - start
        assert stats.num_buckets >= 3
        after = engines.generate(PROMPTS, PARAMS)
        diff = _max_diff(reference, after)
        print(f"{backend}: start-up {startup_s:.1f} s, sync {sync_s * 1e3:.0f} ms "
              f"({stats.num_buckets} buckets), max |Δ logp| {diff:.2e}")  # fmt: skip
        assert diff <= TOLERANCE[backend]
    finally:
        engines.close()
    assert all(not p.is_alive() for p in engines._procs)

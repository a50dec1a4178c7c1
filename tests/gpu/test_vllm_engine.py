"""VllmRolloutEngine on a GPU: processed logprobs vs an HF forward, weight sync, sleep.

Needs CUDA and vLLM (the ``gpu`` extra). The bf16 check runs this file as a script in a
fresh process, so that only one vLLM engine lives in each process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from oumi_megatron.rollout import SamplingParams
from oumi_megatron.rollout.logprob_check import rollout_logprob_error, teacher_forced_logprobs
from oumi_megatron.rollout.transports import InProcessWeightSender

pytestmark = pytest.mark.gpu

PROMPTS = [[5, 6, 7], [8, 9, 10, 11, 12, 13, 14], [15], [40, 41, 42, 43]]
# vLLM's Triton attention runs fp32 dot products in TF32; an fp32 HF forward is the reference.
FP32_TOL = 5e-3
BF16_MEAN_TOL, BF16_MAX_TOL = 1.5e-2, 6e-2
BUCKET_BYTES = 64 * 1024


def _build(root: Path) -> tuple[Path, Path]:
    from oumi_megatron.testing.tiny_models import build_tiny_pair

    return build_tiny_pair("qwen2", root)


def _hf(model_dir: Path, dtype: torch.dtype = torch.float32):
    from transformers import AutoModelForCausalLM

    torch.backends.cuda.matmul.allow_tf32 = False
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype)
    return model.float().cuda().eval()  # bf16-rounded weights, fp32 arithmetic


def _engine(model_dir: Path, dtype: str):
    from oumi_megatron.rollout.vllm_engine import VllmRolloutEngine

    return VllmRolloutEngine(
        model_dir,
        dtype=dtype,
        gpu_memory_utilization=0.25,
        max_model_len=256,
        enforce_eager=True,
        seed=0,
    )


def _diffs(model, samples, params) -> torch.Tensor:
    refs = teacher_forced_logprobs(model, samples, params)
    return torch.cat(
        [
            (torch.tensor(s.completion_logprobs) - r).abs()
            for s, r in zip(samples, refs, strict=True)
        ]
    )


@pytest.fixture(scope="module")
def dirs(tmp_path_factory) -> tuple[Path, Path]:
    pytest.importorskip("vllm")
    return _build(tmp_path_factory.mktemp("vllm_models"))


@pytest.fixture(scope="module")
def hf(dirs):
    return {"a": _hf(dirs[0]), "b": _hf(dirs[1])}


@pytest.fixture(scope="module")
def engine(dirs):
    engine = _engine(dirs[0], "float32")
    yield engine
    engine.shutdown()


def _weights(model):
    return iter(model.state_dict().items())  # CUDA tensors, HF names


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_generate_groups_samples_and_matches_hf_logprobs(engine, hf, temperature):
    params = SamplingParams(n=3, temperature=temperature, max_new_tokens=16, seed=1)
    samples = engine.generate(PROMPTS, params)
    assert [(s.prompt_index, s.sample_index) for s in samples] == [
        (i, j) for i in range(len(PROMPTS)) for j in range(3)
    ]
    assert all(s.prompt_ids == PROMPTS[s.prompt_index] for s in samples)
    assert all(len(s.completion_ids) == len(s.completion_logprobs) for s in samples)
    assert _diffs(hf["a"], samples, params).max().item() <= FP32_TOL
    trainer = teacher_forced_logprobs(hf["a"], samples, params)
    assert rollout_logprob_error(samples, trainer).item() <= 1.0 + FP32_TOL


def test_top_k_top_p_logprobs_are_processed(engine, hf):
    params = SamplingParams(n=2, temperature=0.8, top_k=20, top_p=0.9, max_new_tokens=16, seed=2)
    samples = engine.generate(PROMPTS, params)
    assert all(torch.isfinite(torch.tensor(s.completion_logprobs)).all() for s in samples)
    assert _diffs(hf["a"], samples, params).max().item() <= FP32_TOL


def test_seeded_generation_is_deterministic(engine):
    params = SamplingParams(n=2, max_new_tokens=12, seed=7)
    first, second = engine.generate(PROMPTS, params), engine.generate(PROMPTS, params)
    assert [s.completion_ids for s in first] == [s.completion_ids for s in second]


def test_stop_token_and_length(engine):
    base = engine.generate(PROMPTS[:1], SamplingParams(max_new_tokens=10, seed=3))[0]
    assert base.finish_reason == "length" or base.completion_ids[-1] == 2
    ids = base.completion_ids
    k = next((k for k in range(1, len(ids)) if ids[k] not in ids[:k] and ids[k] != 2), None)
    if k is None:
        pytest.skip("no usable stop token in the sampled completion")
    params = SamplingParams(max_new_tokens=10, seed=3, stop_token_ids=(ids[k],))
    stopped = engine.generate(PROMPTS[:1], params)[0]
    assert stopped.completion_ids == ids[: k + 1] and stopped.finish_reason == "stop"


def test_update_weights_switches_and_restores(engine, hf):
    params = SamplingParams(n=2, temperature=1.0, max_new_tokens=16, seed=4)
    base = engine.generate(PROMPTS, params)
    sender = InProcessWeightSender(engine, bucket_bytes=BUCKET_BYTES)
    assert sender.send(_weights(hf["b"])).num_buckets > 3
    switched = engine.generate(PROMPTS, params)
    assert [s.completion_ids for s in switched] != [s.completion_ids for s in base]
    assert _diffs(hf["b"], switched, params).max().item() <= FP32_TOL
    assert _diffs(hf["a"], switched, params).max().item() > 10 * FP32_TOL

    sender.send(_weights(hf["a"]))
    restored = engine.generate(PROMPTS, params)
    assert [s.completion_ids for s in restored] == [s.completion_ids for s in base]
    for a, b in zip(base, restored, strict=True):
        torch.testing.assert_close(a.completion_logprobs, b.completion_logprobs, atol=1e-6, rtol=0)


def test_sync_while_asleep_then_wake(engine, hf):
    params = SamplingParams(n=2, max_new_tokens=12, seed=5)
    engine.sleep()
    with pytest.raises(RuntimeError, match="asleep"):
        engine.generate(PROMPTS, params)
    InProcessWeightSender(engine, bucket_bytes=BUCKET_BYTES).send(_weights(hf["b"]))
    engine.wake_up()
    samples = engine.generate(PROMPTS, params)
    assert _diffs(hf["b"], samples, params).max().item() <= FP32_TOL
    InProcessWeightSender(engine).send(_weights(hf["a"]))  # leave model A for other tests


def test_bf16_logprobs_close_to_hf(dirs, tmp_path):
    out = tmp_path / "bf16.json"
    proc = subprocess.run(
        [sys.executable, __file__, str(dirs[0]), str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    result = json.loads(out.read_text())
    assert result["mean"] <= BF16_MEAN_TOL and result["max"] <= BF16_MAX_TOL, result


def _bf16_check(model_dir: Path, out: Path) -> None:
    engine = _engine(model_dir, "bfloat16")
    params = SamplingParams(n=2, temperature=1.0, max_new_tokens=16, seed=6)
    samples = engine.generate(PROMPTS, params)
    diffs = _diffs(_hf(model_dir, torch.bfloat16), samples, params)
    out.write_text(json.dumps({"mean": diffs.mean().item(), "max": diffs.max().item()}))
    engine.shutdown()


if __name__ == "__main__":
    _bf16_check(Path(sys.argv[1]), Path(sys.argv[2]))

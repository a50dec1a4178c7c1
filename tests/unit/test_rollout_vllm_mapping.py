"""VllmRolloutEngine without vLLM: clean import, parameter and output mapping."""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import pytest

from oumi_megatron.rollout import SamplingParams
from oumi_megatron.rollout.vllm_engine import (
    VllmRolloutEngine,
    samples_from_outputs,
    vllm_sampling_kwargs,
)

HAS_VLLM = importlib.util.find_spec("vllm") is not None


@pytest.mark.skipif(HAS_VLLM, reason="vLLM is installed")
def test_constructing_without_vllm_says_what_to_do():
    with pytest.raises(ImportError, match="TorchRolloutEngine"):
        VllmRolloutEngine("/nonexistent")


def test_sampling_kwargs_mapping():
    params = SamplingParams(
        n=4, temperature=0.7, top_p=0.9, top_k=-1, max_new_tokens=33, stop_token_ids=(2, 7), seed=5
    )
    kwargs = vllm_sampling_kwargs(params, seed=2**40 + 3)
    assert kwargs == {
        "n": 4,
        "temperature": 0.7,
        "top_p": 0.9,
        "top_k": 0,
        "max_tokens": 33,
        "stop_token_ids": [2, 7],
        "ignore_eos": False,
        "logprobs": 0,
        "seed": 3,  # kept below 2**31
        "detokenize": False,
    }
    assert vllm_sampling_kwargs(SamplingParams(top_k=50), 0)["top_k"] == 50
    assert vllm_sampling_kwargs(SamplingParams(), None)["seed"] is None


def _completion(index, ids, logprobs, reason="stop"):
    # vLLM's per-position logprobs: {token_id: Logprob(logprob=...)} (plus top-k entries).
    positions = [
        {tok: SimpleNamespace(logprob=lp), 999: SimpleNamespace(logprob=-50.0)}
        for tok, lp in zip(ids, logprobs, strict=True)
    ]
    return SimpleNamespace(index=index, token_ids=ids, logprobs=positions, finish_reason=reason)


def test_outputs_map_to_grouped_samples():
    outputs = [
        SimpleNamespace(
            outputs=[_completion(1, [4, 2], [-0.5, -0.1]), _completion(0, [3], [-1.0], "length")]
        ),
        SimpleNamespace(
            outputs=[_completion(1, [9], [-2.0]), _completion(0, [8, 8], [-0.2, -0.3])]
        ),
    ]
    samples = samples_from_outputs(outputs, [[1, 2], [3]], n=2)
    assert [(s.prompt_index, s.sample_index) for s in samples] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert samples[0].completion_ids == [3] and samples[0].finish_reason == "length"
    assert samples[1].completion_logprobs == [-0.5, -0.1] and samples[1].finish_reason == "stop"
    assert samples[3].prompt_ids == [3] and samples[3].completion_ids == [9]


def test_outputs_reject_aborted_or_missing_logprobs():
    aborted = [SimpleNamespace(outputs=[_completion(0, [3], [-1.0], "abort")])]
    with pytest.raises(RuntimeError, match="abort"):
        samples_from_outputs(aborted, [[1]], n=1)
    missing = [SimpleNamespace(outputs=[SimpleNamespace(index=0, token_ids=[3], logprobs=None)])]
    with pytest.raises(RuntimeError, match="logprobs"):
        samples_from_outputs(missing, [[1]], n=1)
    with pytest.raises(RuntimeError, match="n=2"):
        samples_from_outputs([SimpleNamespace(outputs=[_completion(0, [3], [-1.0])])], [[1]], n=2)


class _FakeLLM:
    """Records sleep/wake calls the way vLLM's LLM receives them."""

    def __init__(self):
        self.calls = []

    def sleep(self, level):
        self.calls.append(("sleep", level))

    def wake_up(self, tags=None):
        self.calls.append(("wake_up", tags))

    def collective_rpc(self, fn, args=()):
        self.calls.append(("rpc", len(args[0])))

    def reset_prefix_cache(self):
        self.calls.append(("reset",))
        return True


def _fake_engine() -> VllmRolloutEngine:
    engine = object.__new__(VllmRolloutEngine)
    engine.llm, engine.sleep_level = _FakeLLM(), 1
    engine._asleep = engine._weights_awake = False
    return engine


def test_wake_after_sync_while_asleep_wakes_only_the_kv_cache():
    # vLLM 0.26's CuMemAllocator maps a tag's memory again on every wake: waking the weights
    # twice failed on an H100 with "CUDA Error: invalid argument".
    engine = _fake_engine()
    engine.sleep()
    engine.update_weights([("w", None)])
    engine.update_weights([("v", None)])
    engine.wake_up()
    assert engine.llm.calls == [
        ("sleep", 1),
        ("wake_up", ["weights"]),
        ("rpc", 1),
        ("rpc", 1),
        ("wake_up", ["kv_cache"]),
        ("reset",),
    ]


def test_wake_without_sync_wakes_everything():
    engine = _fake_engine()
    engine.sleep()
    engine.wake_up()
    assert engine.llm.calls == [("sleep", 1), ("wake_up", None), ("reset",)]

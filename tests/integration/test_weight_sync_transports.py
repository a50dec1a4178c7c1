"""In-process and checkpoint transports, and the transport factory (single process)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from oumi_megatron.rollout import SamplingParams
from oumi_megatron.rollout.transports import (
    CheckpointWeightReceiver,
    CheckpointWeightSender,
    InProcessWeightReceiver,
    iter_checkpoint_buckets,
    latest_version,
)
from oumi_megatron.rollout.weight_sync import TRANSPORTS, make_weight_receiver, make_weight_sender

PROMPTS = [[5, 6, 7], [8, 9, 10, 11, 12]]
PARAMS = SamplingParams(n=2, temperature=0.8, max_new_tokens=6, seed=17)


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> tuple[Path, Path]:
    from oumi_megatron.testing.tiny_models import build_tiny_pair

    root = tmp_path_factory.mktemp("sync_models")
    return build_tiny_pair("qwen2", root)


@pytest.fixture(scope="module")
def source_weights(model_dirs) -> list[tuple[str, torch.Tensor]]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dirs[0]), dtype=torch.float32)
    return list(model.state_dict().items())


class RecordingEngine:
    """Stands in for an engine: records what a receiver hands over."""

    def __init__(self) -> None:
        self.buckets: list[list[tuple[str, torch.Tensor]]] = []
        self.finished = 0

    def update_weights(self, named_tensors):
        self.buckets.append([(n, t.clone()) for n, t in named_tensors])

    def finish_weight_update(self):
        self.finished += 1


def _samples(engine):
    return [(s.completion_ids, s.completion_logprobs) for s in engine.generate(PROMPTS, PARAMS)]


def test_inprocess_sync_makes_engine_match_source(model_dirs, source_weights):
    from oumi_megatron.rollout.torch_engine import TorchRolloutEngine

    engine = TorchRolloutEngine(model_dirs[1])
    sender = make_weight_sender("inprocess", engine=engine, bucket_bytes=64 * 1024)
    stats = sender.send(iter(source_weights))
    assert stats.num_tensors == len(source_weights) and stats.num_buckets > 3
    assert engine.weight_version == 1
    assert make_weight_receiver("inprocess").receive_into(engine).num_tensors == 0
    assert _samples(engine) == _samples(TorchRolloutEngine(model_dirs[0]))


def test_checkpoint_round_trip_is_bit_identical(tmp_path, source_weights):
    extra = [
        ("bf16", torch.randn(5, 3).bfloat16()),
        ("alias", source_weights[0][1]),  # shares memory with the first tensor
        ("view", torch.arange(20.0)[5:12]),  # view into a bigger storage
    ]
    weights = source_weights + extra
    stats = CheckpointWeightSender(tmp_path, bucket_bytes=64 * 1024).send(iter(weights))
    assert latest_version(tmp_path) == 1 and stats.num_buckets > 3
    manifest = json.loads((tmp_path / "v00000001" / "manifest.json").read_text())
    assert manifest["num_tensors"] == len(weights)
    assert [n for b in manifest["buckets"] for n in b["names"]] == [n for n, _ in weights]

    recorder = RecordingEngine()
    receiver = CheckpointWeightReceiver(tmp_path)
    received = receiver.receive_into(recorder)
    got = [pair for bucket in recorder.buckets for pair in bucket]
    assert [n for n, _ in got] == [n for n, _ in weights]
    for (_, a), (_, b) in zip(weights, got, strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b)
    assert recorder.finished == 1 and received.num_bytes == stats.num_bytes
    # Nothing newer: a receiver with no timeout says so instead of re-applying.
    with pytest.raises(TimeoutError):
        receiver.receive_into(recorder)


def test_checkpoint_versions_are_published_atomically_and_pruned(tmp_path):
    sender = make_weight_sender("checkpoint", directory=tmp_path, bucket_bytes=100, keep_versions=2)
    for step in range(4):
        sender.send([("w", torch.full((40,), float(step))), ("b", torch.zeros(3))])
    assert latest_version(tmp_path) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["LATEST", "v00000003", "v00000004"]
    buckets = list(iter_checkpoint_buckets(tmp_path, 4))
    assert len(buckets) == 2 and torch.equal(buckets[0][0][1], torch.full((40,), 3.0))


def test_checkpoint_failure_leaves_no_partial_version(tmp_path):
    def broken():
        yield "w", torch.zeros(4)
        raise RuntimeError("gather failed")

    with pytest.raises(RuntimeError, match="gather failed"):
        CheckpointWeightSender(tmp_path, bucket_bytes=16).send(broken())
    assert list(tmp_path.iterdir()) == [] and latest_version(tmp_path) is None


def test_checkpoint_sync_into_torch_engine(tmp_path, model_dirs, source_weights):
    from oumi_megatron.rollout.torch_engine import TorchRolloutEngine

    make_weight_sender("checkpoint", directory=tmp_path, bucket_bytes=32 * 1024).send(
        iter(source_weights)
    )
    engine = TorchRolloutEngine(model_dirs[1])
    make_weight_receiver("checkpoint", directory=tmp_path).receive_into(engine)
    assert _samples(engine) == _samples(TorchRolloutEngine(model_dirs[0]))


def test_factory_validates_arguments(tmp_path):
    assert TRANSPORTS == ("inprocess", "gloo", "nccl", "checkpoint")
    with pytest.raises(ValueError, match="unknown weight transport"):
        make_weight_sender("carrier-pigeon")
    with pytest.raises(ValueError, match="engine="):
        make_weight_sender("inprocess")
    with pytest.raises(ValueError, match="directory="):
        make_weight_receiver("checkpoint")
    with pytest.raises(ValueError, match="exactly one of"):
        make_weight_sender("gloo")
    assert isinstance(make_weight_receiver("inprocess"), InProcessWeightReceiver)


def test_checkpoint_handles_aliases_within_one_bucket(tmp_path):
    tied = torch.randn(8, 4)
    CheckpointWeightSender(tmp_path).send([("embed", tied), ("lm_head", tied)])
    (bucket,) = iter_checkpoint_buckets(tmp_path, 1)
    assert [n for n, _ in bucket] == ["embed", "lm_head"]
    assert all(torch.equal(t, tied) for _, t in bucket)

"""gloo broadcast transport across 2 processes (torchrun): exact weights and logprobs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import torchrun

WORKER = Path(__file__).with_name("weight_sync_worker.py")


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, dict]:
    from oumi_megatron.testing.tiny_models import build_tiny_model

    root = tmp_path_factory.mktemp("broadcast")
    source = build_tiny_model("llama", root / "source", seed=0)
    target = build_tiny_model("llama", root / "target", seed=1)
    out = root / "out"
    out.mkdir()
    torchrun(2, WORKER, str(source), str(target), str(out), timeout=600)
    return {p.stem: torch.load(p, weights_only=False) for p in out.glob("*.pt")}


@pytest.mark.slow
@pytest.mark.parametrize("receiver", ["receiver_group", "receiver_store"])
def test_receiver_gets_sender_weights_exactly(results, receiver):
    sent, got = results["sender"], results[receiver]
    assert sent["state"].keys() == got["state"].keys()
    for name, tensor in sent["state"].items():
        assert torch.equal(tensor, got["state"][name]), name
    assert got["ids"] == sent["ids"]
    assert got["logprobs"] == sent["logprobs"]  # same weights, same kernels: bit-equal


@pytest.mark.slow
def test_sync_used_several_buckets(results):
    sent, got = results["sender"]["stats"], results["receiver_group"]["stats"]
    assert sent["num_buckets"] >= 3
    assert got["num_buckets"] == sent["num_buckets"]
    assert got["num_tensors"] == sent["num_tensors"] == len(results["sender"]["state"])
    assert got["num_bytes"] == sent["num_bytes"]

"""Top-k/top-p log-probs with the vocabulary split over 2 ranks equal the single-process ones
and autograd through the masked log_softmax (values, gradients, entropy)."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import torchrun

WORKER = Path(__file__).with_name("logprobs_worker.py")


def test_truncated_logprobs_at_tp2(tmp_path):
    out = tmp_path / "results.json"
    torchrun(2, WORKER, str(out), timeout=300)
    for result in json.loads(out.read_text()):
        assert result["vs_single_process"] == 0.0, result  # same rows, same maths, same bits
        assert result["logprob"] <= 1e-5, result
        assert result["grad"] <= 1e-5, result
        assert result["entropy"] <= 1e-5, result

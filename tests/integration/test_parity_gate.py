"""The parity gate before training: exact conversions pass, a wrong one stops the run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("parity_gate_worker.py")


@pytest.mark.slow
def test_gate_passes_exact_conversion_and_catches_a_broken_one(tiny_models, tmp_path) -> None:
    env = {**os.environ, "MASTER_PORT": "29561", "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, str(WORKER), str(tiny_models / "llama"), str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["max_abs_diff"] <= 1e-6
    caught = result["caught"]
    assert caught is not None, "a 1% change of layer 1's weights must stop the run"
    assert caught["exit_code"] == 4
    assert "converted Llama model" in caught["message"]
    assert "decoder layer 1 differs" in caught["message"]
    print(f"gate {result['gate_seconds']:.3f} s, model load {result['load_seconds']:.1f} s")

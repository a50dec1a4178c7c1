"""The CPU layer that lets Megatron-Core and Bridge run without CUDA or Transformer Engine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import quiet_env

PROBE = Path(__file__).with_name("compat_probe.py")
pytestmark = pytest.mark.cpu_only


@pytest.fixture(scope="module")
def report() -> dict:
    proc = subprocess.run(
        [sys.executable, str(PROBE)], env=quiet_env(), capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_current_device_is_cpu(report):
    assert report["current_device_failed_before"] is True
    assert report["current_device_after"] == "cpu"


def test_rng_tracker_forks_cpu_generator(report):
    assert report["tracker_is_cpu"]
    assert report["stream_matches_seed"]
    assert report["stream_advances"]
    assert report["outer_state_restored"]


def test_default_causal_mask_on_cpu(report):
    assert report["causal_mask"] == [
        [False, True, True],
        [False, False, True],
        [False, False, False],
    ]


def test_bridge_imports_without_transformer_engine(report):
    assert report["bridge_imported"]
    assert not report["te_left_in_sys_modules"]
    assert not report["gpt_specs_have_te"]

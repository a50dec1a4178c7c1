"""Launching torchrun workers from tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TORCHRUN = Path(sys.executable).with_name("torchrun")


def quiet_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DO_NOT_TRACK="1",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        WANDB_MODE="offline",
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO / "tests" / "integration")]),
    )
    return env


def torchrun(
    nproc: int, script: Path, *args: str, timeout: int = 900
) -> subprocess.CompletedProcess:
    """Run `script` under torchrun with gloo; fails the test with the tail of its log."""
    command = [str(TORCHRUN), "--standalone", f"--nproc-per-node={nproc}", str(script), *args]
    proc = subprocess.run(
        command, env=quiet_env(), capture_output=True, text=True, timeout=timeout, cwd=REPO
    )
    if proc.returncode != 0:
        pytest.fail(f"torchrun failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-6000:]}")
    return proc

"""Seeding and the RNG part of a checkpoint: every generator the trainer may draw from.

Runs in a fresh interpreter (a 1-process gloo world with Megatron's model-parallel state) so
that no global state leaks into other tests.
"""

from __future__ import annotations

import json
import subprocess
import sys

_SCRIPT = """
import json, random
import numpy as np, torch
from megatron.core.tensor_parallel.random import get_cuda_rng_tracker
from oumi_megatron.parallel.layout import ParallelLayout
from oumi_megatron.parallel.startup import init_distributed, init_model_parallel, seed_everything
from oumi_megatron.training.checkpoint import _rng_state, _set_rng_state

def draws():
    with get_cuda_rng_tracker().fork():
        tracker = torch.rand(2).tolist()
    # random.gauss draws two values and keeps the second for the next call (gauss_next).
    return [random.random(), random.gauss(0, 1), float(np.random.rand()),
            *torch.rand(2).tolist(), *tracker]

init_distributed()
init_model_parallel(ParallelLayout(), seed=7)
first = draws()
seed_everything(7)
same_seed = draws()
seed_everything(8)
other_seed = draws()

state = _rng_state()  # draws() called random.gauss once since the seed: gauss_next is cached
after_save = draws()
draws()
_set_rng_state(state)
restored = draws()
legacy = dict(state, python_pos=state["python_gauss_next"])  # key name before 2026-11-27
del legacy["python_gauss_next"]
_set_rng_state(legacy)
restored_legacy = draws()
print(json.dumps({"first": first, "same_seed": same_seed, "other_seed": other_seed,
                  "after_save": after_save, "restored": restored,
                  "restored_legacy": restored_legacy, "gauss_next": state["python_gauss_next"]}))
"""


def test_seeding_and_rng_checkpoint_state_round_trip():
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    # The seed fixes Python, NumPy, torch and Megatron's tracker streams; another seed moves all.
    assert out["same_seed"] == out["first"]
    assert all(a != b for a, b in zip(out["other_seed"], out["first"], strict=True))
    # A restored state replays the same draws, the cached Gaussian included.
    assert out["gauss_next"] is not None
    assert out["restored"] == out["after_save"]
    assert out["restored_legacy"] == out["after_save"]

"""Training checkpoints: `output_dir/checkpoints/step_N/` with model, optimizer, LR scheduler,
data position, RNG states and step; written under a temporary name and renamed when complete,
so a process killed mid-save leaves the previous checkpoint intact. Keeps the last K.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
import signal
from pathlib import Path

import torch

from oumi_megatron.model.dist_ckpt import sharded_state_dict
from oumi_megatron.parallel.ranks import barrier, rank

logger = logging.getLogger(__name__)
STEP_DIR = re.compile(r"^step_(\d+)$")
TRAINER_STATE = "trainer_state.json"
RNG_STATE = "rng_state_rank{rank}.pt"
LATEST = "latest"


# Fault injection for tests: SIGKILL this process at a named point of the save of step N
# (OUMI_MEGATRON_FAULT=before_rename:3 or after_save:3). Never set in normal runs.
FAULT_ENV = "OUMI_MEGATRON_FAULT"


def _fault_point(name: str, step: int) -> None:
    if os.environ.get(FAULT_ENV) == f"{name}:{step}":
        logger.warning("fault injection: killing rank %d at %s of step %d", rank(), name, step)
        os.kill(os.getpid(), signal.SIGKILL)


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under `root`, oldest first."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found) if (p / TRAINER_STATE).exists()]


def resolve_resume_path(root: Path, resume: str | None) -> Path | None:
    """`latest` → newest complete checkpoint under `root`; a path → that checkpoint."""
    if not resume:
        return None
    if resume == LATEST:
        checkpoints = list_checkpoints(root)
        return checkpoints[-1] if checkpoints else None
    path = Path(resume)
    if not (path / TRAINER_STATE).exists():
        raise FileNotFoundError(
            f"training.resume_from_checkpoint ({resume}) is not a complete checkpoint (no "
            f"{TRAINER_STATE}); use 'latest' or one of {[p.name for p in list_checkpoints(root)]}"
        )
    return path


def _full_state(model, optimizer, is_loading: bool = False) -> dict:
    # is_loading makes the optimizer create its (lazy) Adam state first, so there is
    # something to load the checkpoint into.
    model_state = sharded_state_dict(model)
    optimizer_state = optimizer.sharded_state_dict(model_state, is_loading=is_loading)
    return {**model_state, "optimizer": optimizer_state}


def save_checkpoint(root: Path, step: int, model, optimizer, scheduler, trainer_state: dict,
                    keep_last: int | None = None, fully_parallel: bool = False) -> Path:  # fmt: skip
    """Collective save of step `step`; returns the final directory."""
    from megatron.core import dist_checkpointing

    from oumi_megatron.model.dist_ckpt import use_forked_writer_queue

    final = root / f"step_{step}"
    tmp = root / f".step_{step}.tmp"
    if rank() == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "dist").mkdir(parents=True)
    barrier()
    use_forked_writer_queue()
    dist_checkpointing.save(
        _full_state(model, optimizer), str(tmp / "dist"), sharded_strategy=_strategy(fully_parallel)
    )
    torch.save(_rng_state(), tmp / RNG_STATE.format(rank=rank()))
    barrier()
    _fault_point("before_rename", step)
    if rank() == 0:
        state = {**trainer_state, "step": step, "scheduler": scheduler.state_dict()}
        (tmp / TRAINER_STATE).write_text(json.dumps(state, indent=1))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        (root / LATEST).write_text(final.name)
        _prune(root, keep_last)
    barrier()
    _fault_point("after_save", step)
    return final


def _strategy(fully_parallel: bool):
    """Megatron's default writer, optionally spreading the writes over data-parallel ranks."""
    if not fully_parallel:
        return None
    from megatron.core import parallel_state
    from megatron.core.dist_checkpointing.serialization import get_default_save_sharded_strategy
    from megatron.core.dist_checkpointing.strategies.fully_parallel import (
        FullyParallelSaveStrategyWrapper,
    )

    return FullyParallelSaveStrategyWrapper(
        get_default_save_sharded_strategy(),
        parallel_state.get_data_parallel_group(with_context_parallel=True),
    )


def load_checkpoint(path: Path, model, optimizer, scheduler) -> dict:
    """Restore model, optimizer, scheduler and RNG in place; returns the trainer state."""
    from megatron.core import dist_checkpointing
    from megatron.core.utils import unwrap_model

    state = dist_checkpointing.load(
        _full_state(model, optimizer, is_loading=True), str(path / "dist")
    )
    bare = unwrap_model(model)
    if len(bare) == 1:
        bare[0].load_state_dict(state["model"], strict=True)
    else:
        for i, chunk in enumerate(bare):
            chunk.load_state_dict(state[f"model{i}"], strict=True)
    optimizer.load_state_dict(state["optimizer"])
    trainer_state = json.loads((path / TRAINER_STATE).read_text())
    scheduler.load_state_dict(trainer_state["scheduler"])
    rng_file = path / RNG_STATE.format(rank=rank())
    if rng_file.exists():
        _set_rng_state(torch.load(rng_file, weights_only=True))
    logger.info("resumed from %s (step %d)", path, trainer_state["step"])
    return trainer_state


def _rng_state() -> dict:
    from megatron.core.tensor_parallel.random import get_cuda_rng_tracker

    return {
        "python": list(random.getstate()[1]),
        "python_pos": random.getstate()[2],
        "torch": torch.get_rng_state(),
        "tracker": get_cuda_rng_tracker().get_states(),
    }


def _set_rng_state(state: dict) -> None:
    from megatron.core.tensor_parallel.random import get_cuda_rng_tracker

    random.setstate((3, tuple(state["python"]), state["python_pos"]))
    torch.set_rng_state(state["torch"])
    get_cuda_rng_tracker().set_states(state["tracker"])


def _prune(root: Path, keep_last: int | None) -> None:
    if not keep_last or keep_last < 1:
        return
    for old in list_checkpoints(root)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)

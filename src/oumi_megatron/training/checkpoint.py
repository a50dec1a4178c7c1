"""Training checkpoints: `output_dir/checkpoints/step_N/` with model, optimizer, LR scheduler,
data position, RNG states and step; written under a temporary name and renamed when complete,
so a process killed mid-save leaves the previous checkpoint intact. Keeps the last K.
Optionally asynchronous: the shards are written in the background while training continues.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import random
import re
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from oumi_megatron.faults import fault_point
from oumi_megatron.model.dist_ckpt import sharded_state_dict
from oumi_megatron.parallel.ranks import barrier, rank

logger = logging.getLogger(__name__)
STEP_DIR = re.compile(r"^step_(\d+)$")
TRAINER_STATE = "trainer_state.json"
RNG_STATE = "rng_state_rank{rank}.pt"
LATEST = "latest"


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under `root`, oldest first."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found) if (p / TRAINER_STATE).exists()]


def layout_record(setup) -> dict:
    """What a checkpoint's shards depend on: recorded in trainer_state.json, checked on resume."""
    layout = setup.layout
    return {
        "tensor_model_parallel_size": layout.tp,
        "pipeline_model_parallel_size": layout.pp,
        "virtual_pipeline_model_parallel_size": layout.vpp,
        "context_parallel_size": layout.cp,
        "expert_model_parallel_size": layout.ep,
        "expert_tensor_parallel_size": layout.etp,
        **{f"transformer_config.{k}": v for k, v in layout.split.megatron_fields().items()},
        "data_parallel_size": layout.data_parallel_size(setup.world_size),
        "use_distributed_optimizer": setup.cfg.megatron.ddp_config.use_distributed_optimizer,
        "params_dtype": str(setup.params_dtype).removeprefix("torch."),
    }


def layout_mismatch(path: Path, record: dict) -> str | None:
    """Why checkpoint `path` cannot be resumed with layout `record` (None: it can). Optimizer
    shards are laid out by the layout they were saved with; resuming with another is refused
    by name rather than failing on missing keys."""
    saved = json.loads((path / TRAINER_STATE).read_text()).get("layout")
    if saved is None:
        return None  # written before layouts were recorded
    # Keys a checkpoint lacks were recorded only later (expert TP, the pipeline split).
    changed = [f"megatron.{k}: saved {saved[k]}, now {v}" for k, v in record.items()
               if k in saved and saved[k] != v]  # fmt: skip
    if not changed:
        return None
    return (
        f"checkpoint {path} was saved with another layout ({'; '.join(changed)}). Its optimizer "
        f"state is sharded for that layout. Fix: resume with the saved values (and as many "
        f"processes), or export that step's model (oumi-megatron export --checkpoint "
        f"{path.name}) and start a new run from it."
    )


def requested_resume(explicit: str | None, training) -> str | None:
    """What to resume from: `explicit` (--resume), training.resume_from_checkpoint, or
    ``latest`` for training.try_resume_from_last_checkpoint."""
    resume = explicit or training.resume_from_checkpoint
    if not resume and training.try_resume_from_last_checkpoint:
        resume = LATEST
    return resume


def resolve_resume_path(root: Path, resume: str | None) -> Path | None:
    """`latest` → newest complete checkpoint under `root`; a name under `root` (`step_2`) or a
    path → that checkpoint."""
    if not resume:
        return None
    if resume == LATEST:
        checkpoints = list_checkpoints(root)
        return checkpoints[-1] if checkpoints else None
    path = Path(resume)
    if not path.is_absolute() and (root / path / TRAINER_STATE).exists():
        path = root / path
    if not (path / TRAINER_STATE).exists():
        raise FileNotFoundError(
            f"training.resume_from_checkpoint ({resume}) is not a complete checkpoint (no "
            f"{TRAINER_STATE}); use 'latest' or one of {[p.name for p in list_checkpoints(root)]}"
        )
    return path


def set_aside_later(root: Path, resumed: Path) -> list[Path]:
    """Rank 0, when a run resumes from `resumed`: checkpoints of later steps under `root`
    belong to the branch the run leaves. They move to ``root/abandoned/`` (kept, not deleted),
    where neither ``latest`` nor pruning sees them, and ``latest`` names `resumed`; otherwise
    the resumed run's next save would be pruned in favour of the old higher steps, and a later
    ``--resume latest`` would continue the abandoned branch. Returns the new locations."""
    match = STEP_DIR.match(resumed.name)
    if match is None or resumed.parent.resolve() != root.resolve():
        return []
    step = int(match.group(1))
    by_step = sorted((int(m.group(1)), p) for p in root.iterdir() if (m := STEP_DIR.match(p.name)))
    moved = []
    for _, path in (item for item in by_step if item[0] > step):
        target = root / "abandoned" / path.name
        suffix = 1
        while target.exists():
            target, suffix = root / "abandoned" / f"{path.name}.{suffix}", suffix + 1
        target.parent.mkdir(exist_ok=True)
        os.replace(path, target)
        moved.append(target)
    (root / LATEST).write_text(resumed.name)
    return moved


_OPTIMIZER_METADATA = {"distrib_optim_sharding_type": "dp_reshardable"}


def _restore_adam_steps(optimizer) -> None:
    """Without TE/Apex, Adam's per-parameter `step` is not restored by
    `DistributedOptimizer.load_state_dict` (it stays at the value of the state it loaded into,
    and when set, one tensor is shared by every parameter, which torch's Adam would advance once
    per parameter). The loaded param groups carry the saved step: give each parameter its own."""
    for inner in _distributed_optimizers(optimizer):
        for group in inner.optimizer.param_groups:
            if "step" not in group:
                continue
            for param in group["params"]:
                state = inner.optimizer.state.get(param)
                if state is not None:
                    state["step"] = _step_tensor(float(group["step"]), state.get("step"))


def _step_tensor(step: float, like) -> torch.Tensor:
    """Adam's ``step`` as its own tensor, where the optimizer keeps it: on the host for the
    multi-tensor AdamW, on the parameter's device (fp32) for the fused one."""
    if isinstance(like, torch.Tensor):
        return torch.tensor(step, dtype=like.dtype, device=like.device)
    return torch.tensor(step)


def _materialize_distributed_optimizer_state(optimizer) -> None:
    """Without TE/Apex, `DistributedOptimizer.state_dict()` reads each parameter's Adam `step`,
    which does not exist before the first step. Megatron's own dummy initialisation (used on its
    FSDP path) creates the state; the checkpoint load then overwrites it and the weights."""
    for inner in _distributed_optimizers(optimizer):
        if len(inner.optimizer.state) == 0:
            inner._init_optimizer_states_with_dummy_values()


def _distributed_optimizers(optimizer) -> list:
    """The `DistributedOptimizer`s in `optimizer` (itself, or inside a `ChainedOptimizer`)."""
    from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer

    chain = getattr(optimizer, "chained_optimizers", [optimizer])
    return [inner for inner in chain if isinstance(inner, DistributedOptimizer)]


def _full_state(model, optimizer, is_loading: bool = False) -> dict:
    # is_loading makes the optimizer create its (lazy) Adam state first, so there is
    # something to load the checkpoint into.
    if is_loading:
        _materialize_distributed_optimizer_state(optimizer)
    model_state = sharded_state_dict(model)
    # The distributed optimizer's default format ("fully_sharded_model_space") uses flattened
    # ranges, which Megatron's checkpointing no longer accepts; "dp_reshardable" is
    # Megatron-LM's default (resumable at another DP size). Other optimizers ignore it.
    optimizer_state = optimizer.sharded_state_dict(
        model_state, is_loading=is_loading, metadata=_OPTIMIZER_METADATA
    )
    return {**model_state, "optimizer": optimizer_state}


class Checkpointer:
    """Collective saves of training checkpoints under `root`, synchronous or asynchronous.

    Both modes build one Megatron `AsyncRequest`: the shard writes, then finalize callbacks
    that run on every rank only after every rank's shards are on disk (torch's `.metadata`,
    Megatron's `metadata.json`, then ours: RNG files, trainer state, rename to `step_N`,
    `latest`, pruning). Synchronous saves execute it in place. Asynchronous saves hand it to
    Megatron's `AsyncCallsQueue`: a forked process writes while training continues, and the
    finalize callbacks run at a later `finalize()`; until then the previous checkpoint is
    the newest loadable one.
    """

    def __init__(self, root: Path, keep_last: int | None = None, fully_parallel: bool = False,
                 use_async: bool = False):  # fmt: skip
        self.root, self.keep_last, self.fully_parallel = root, keep_last, fully_parallel
        self._queue = None
        if use_async:
            from megatron.core.dist_checkpointing.strategies.async_utils import AsyncCallsQueue

            # A fresh forked writer per save (Megatron's default): the fork is a copy-on-write
            # snapshot. The persistent worker would get CPU tensors through shared memory,
            # and training would update them in place while they are being written.
            self._queue = AsyncCallsQueue(persistent=False)

    def save(self, step: int, model, optimizer, scheduler, trainer_state: dict) -> Path:
        """Collective save of step `step`; returns the directory it will have once final."""
        from megatron.core import dist_checkpointing

        from oumi_megatron.model.dist_ckpt import use_forked_writer_queue, writer_dies_with_trainer

        self.finalize(blocking=True)  # at most one save in flight
        final = self.root / f"step_{step}"
        tmp = self.root / f".step_{step}.tmp"
        if rank() == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            (tmp / "dist").mkdir(parents=True)
        barrier()
        use_forked_writer_queue()
        request = dist_checkpointing.save(
            _full_state(model, optimizer), str(tmp / "dist"),
            sharded_strategy=_strategy(self.fully_parallel),
            async_sharded_save=True, async_strategy="mcore",
        )  # fmt: skip
        # Everything besides the tensors is captured now and written when the shards are done.
        state = {**trainer_state, "step": step, "scheduler": scheduler.state_dict()}
        publish = functools.partial(
            self._publish, step, tmp, final, json.dumps(state, indent=1), _rng_state()
        )
        request.add_finalize_fn(publish)
        if self._queue is None:
            request.execute_sync()
        else:
            self._queue.schedule_async_request(writer_dies_with_trainer(request))
            fault_point("after_schedule", step)
        return final

    def finalize(self, blocking: bool) -> None:
        """Collective: publish the asynchronous saves whose writes have ended on every rank
        (`blocking`: wait for all of them). A no-op for synchronous saves."""
        if self._queue is not None and self._queue.get_num_unfinalized_calls():
            start = time.perf_counter()
            done = self._queue.maybe_finalize_async_calls(blocking=blocking)
            if done and rank() == 0:
                logger.info("finalized %d async checkpoint save(s) in %.2f s",
                            len(done), time.perf_counter() - start)  # fmt: skip

    def close(self) -> None:
        """Collective: finalize what is pending (blocking) and stop the writer machinery."""
        if self._queue is not None:
            self.finalize(blocking=True)
            self._queue.close()

    def _publish(self, step: int, tmp: Path, final: Path, state_json: str, rng: dict) -> None:
        torch.save(rng, tmp / RNG_STATE.format(rank=rank()))
        barrier()
        fault_point("before_rename", step)
        if rank() == 0:
            (tmp / TRAINER_STATE).write_text(state_json)
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            (self.root / LATEST).write_text(final.name)
            _prune(self.root, self.keep_last)
        barrier()
        fault_point("after_save", step)


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


@torch.no_grad()  # fp32 distributed-optimizer shards are views of the (leaf) parameters
def load_checkpoint(path: Path, model, optimizer, scheduler) -> dict:
    """Restore model, optimizer, scheduler and RNG in place; returns the trainer state."""
    from megatron.core import dist_checkpointing
    from megatron.core.utils import unwrap_model

    from oumi_megatron.model.safe_load import trusted_loading

    with trusted_loading():
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
    _restore_adam_steps(optimizer)
    trainer_state = json.loads((path / TRAINER_STATE).read_text())
    scheduler.load_state_dict(trainer_state["scheduler"])
    rng_file = path / RNG_STATE.format(rank=rank())
    if rng_file.exists():
        _set_rng_state(torch.load(rng_file, weights_only=True))
    logger.info("resumed from %s (step %d)", path, trainer_state["step"])
    return trainer_state


def _rng_state() -> dict:
    from megatron.core.tensor_parallel.random import get_cuda_rng_tracker

    _, internal, gauss_next = random.getstate()
    state = {
        "python": list(internal),
        "python_gauss_next": gauss_next,
        "numpy": _numpy_rng_state(),
        "torch": torch.get_rng_state(),
        # Copies (tensors, or generators with cudagraphable RNG): an asynchronous save writes
        # them later, after training has moved on.
        "tracker": {
            name: value.clone() if isinstance(value, torch.Tensor) else value.clone_state()
            for name, value in get_cuda_rng_tracker().get_states().items()
        },
    }
    if torch.cuda.is_available():  # e.g. hidden dropout draws from the default CUDA generator
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict) -> None:
    from megatron.core.tensor_parallel.random import get_cuda_rng_tracker

    # "python_pos": the key's name in checkpoints written before 2026-11-27.
    gauss_next = state.get("python_gauss_next", state.get("python_pos"))
    random.setstate((3, tuple(state["python"]), gauss_next))
    if "numpy" in state:  # absent from checkpoints written before 2026-11-27
        _set_numpy_rng_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    # A copy: the tracker keeps the dict it is given and writes each fork's new state into it.
    get_cuda_rng_tracker().set_states(dict(state["tracker"]))


def _numpy_rng_state() -> dict:
    # Tensors and numbers only: the file is read back with torch.load(weights_only=True).
    _, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    return {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)}  # fmt: skip


def _set_numpy_rng_state(state: dict) -> None:
    keys = state["keys"].numpy().astype(np.uint32)
    np.random.set_state(
        ("MT19937", keys, state["pos"], state["has_gauss"], state["cached_gaussian"])
    )


def _prune(root: Path, keep_last: int | None) -> None:
    if not keep_last or keep_last < 1:
        return
    for old in list_checkpoints(root)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)

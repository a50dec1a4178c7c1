"""Megatron-Core distributed checkpoints of model chunks: save, load, sharded state dicts."""

from __future__ import annotations

import functools
import multiprocessing as mp
import os
from multiprocessing.managers import SyncManager
from pathlib import Path

import torch

from oumi_megatron.processes import die_with_parent


def sharded_state_dict(chunks: list[torch.nn.Module]) -> dict:
    """Megatron-LM's convention: "model" for one chunk, "model<i>" per virtual pipeline stage.

    ShardedTensor keys are global (layer numbers included), so either form loads into any layout.
    Wrappers (DDP, Float16Module) are looked through: the checkpoint holds the bare model.
    """
    from megatron.core.utils import unwrap_model

    chunks = unwrap_model(chunks)
    if len(chunks) == 1:
        return {"model": chunks[0].sharded_state_dict()}
    return {f"model{i}": chunk.sharded_state_dict() for i, chunk in enumerate(chunks)}


def save_chunks(chunks: list[torch.nn.Module], directory: str | Path) -> None:
    """Collective save of the model chunks into `directory` (which must exist and be empty)."""
    from megatron.core import dist_checkpointing

    use_forked_writer_queue()
    dist_checkpointing.save(sharded_state_dict(chunks), str(directory))


def load_chunks(chunks: list[torch.nn.Module], directory: str | Path) -> None:
    """Collective load into already built chunks; any TP/PP/VPP layout."""
    from megatron.core import dist_checkpointing
    from megatron.core.utils import unwrap_model

    from oumi_megatron.model.safe_load import trusted_loading

    with trusted_loading():
        state = dist_checkpointing.load(sharded_state_dict(chunks), str(directory))
    chunks = unwrap_model(chunks)
    if len(chunks) == 1:
        chunks[0].load_state_dict(state["model"], strict=True)
        return
    for i, chunk in enumerate(chunks):
        chunk.load_state_dict(state[f"model{i}"], strict=True)


def use_forked_writer_queue() -> None:
    # Megatron's checkpoint writer collects results through a multiprocessing Manager started
    # with "spawn", which re-imports the launching script (Megatron and Bridge: ~12 s of CPU per
    # rank). A forked manager only serves a queue, never touches CUDA, and starts instantly.
    from megatron.core.dist_checkpointing.strategies import filesystem_async

    from oumi_megatron import patches

    patches.check("forked-writer-queue")
    if filesystem_async._results_queue is None:
        manager = SyncManager(ctx=mp.get_context("fork"))
        manager.start(initializer=die_with_parent)
        filesystem_async._results_queue = manager.Queue()
        _MANAGERS.append(manager)  # keep it referenced: collecting it stops the server


_MANAGERS: list = []


def writer_dies_with_trainer(request):
    """The same Megatron `AsyncRequest`, its forked writer killed if the trainer dies.

    A trainer that dies can never finalize the save, so its writer's files are garbage; an
    orphaned writer could even still be writing into the temporary directory that a restarted
    run is reusing for the same step.
    """
    if request.async_fn is None:  # nothing to write on this rank: no process is started
        return request
    return request._replace(
        async_fn=functools.partial(_write_as_child, os.getpid(), request.async_fn)
    )


def _write_as_child(trainer_pid: int, write, *args, **kwargs) -> None:
    die_with_parent()
    if os.getppid() != trainer_pid:  # the trainer died before the line above
        os._exit(1)
    write(*args, **kwargs)

"""Rank helpers that also work before (or without) a process group."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_rank0() -> bool:
    return rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def local_world_size() -> int:
    """Processes of this job on this node (torchrun's LOCAL_WORLD_SIZE; 1 without torchrun)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def all_reduce_host(tensor: torch.Tensor, op=dist.ReduceOp.SUM, group=None) -> torch.Tensor:
    """In-place all-reduce of a small host (CPU) tensor under any backend; returns it.

    NCCL reduces CUDA tensors only ("No backend type associated with device type cpu"), so
    under NCCL the values go through the current CUDA device (a wait for the device). No-op
    without a process group or in a group of one.
    """
    if not dist.is_initialized() or dist.get_world_size(group) == 1:
        return tensor
    if tensor.device.type == "cpu" and "gloo" not in str(dist.get_backend(group)):
        staged = tensor.to(torch.cuda.current_device())
        dist.all_reduce(staged, op=op, group=group)
        tensor.copy_(staged.cpu())
    else:
        dist.all_reduce(tensor, op=op, group=group)
    return tensor

"""Reduce per-micro-batch loss metrics to global values, identical on every rank.

Only the last pipeline stage computes losses, and its tensor-parallel ranks hold copies: one
"owner" rank per data-parallel replica (last stage, TP rank 0) contributes, every other rank
contributes the reduction's identity, and one world all-reduce per op gives exact values.
Context-parallel ranks hold different tokens: each contributes its share of the loss metrics
(`is_loss_owner`); other per-replica tallies count once (`is_metric_owner`, CP rank 0).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from megatron.core import parallel_state

from oumi_megatron.algorithms.grpo import combine_metrics, metric_reduce_op
from oumi_megatron.parallel.ranks import all_reduce_host

_IDENTITY = {"sum": 0.0, "min": float("inf"), "max": float("-inf")}
_OPS = {"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}


def is_metric_owner() -> bool:
    return (
        parallel_state.is_pipeline_last_stage(ignore_virtual=True)
        and parallel_state.get_tensor_model_parallel_rank() == 0
        and parallel_state.get_context_parallel_rank() == 0
    )


def is_loss_owner() -> bool:
    """Whether this rank's loss metrics count: last stage, TP rank 0, any CP rank (each holds
    its own tokens' contributions)."""
    return (
        parallel_state.is_pipeline_last_stage(ignore_virtual=True)
        and parallel_state.get_tensor_model_parallel_rank() == 0
    )


def reduce_loss_metrics(microbatch_metrics: list[dict], names: list[str]) -> dict[str, float]:
    """Global metric values from this rank's micro-batch outputs (collective over the world).

    `names` must be the same list on every rank (non-owner ranks have no outputs to read it from).
    """
    local = combine_metrics(microbatch_metrics) if is_loss_owner() and microbatch_metrics else {}
    return all_reduce_metrics(local, {name: metric_reduce_op(name) for name in names})


def all_reduce_metrics(local: dict[str, float], ops: dict[str, str]) -> dict[str, float]:
    """``ops[name]`` ("sum" | "min" | "max") of every rank's ``local[name]`` (a rank without
    a value contributes the identity); one all-reduce per op, over the world. ``ops`` must be
    the same on every rank."""
    local = _as_floats(local)
    result: dict[str, float] = {}
    for op in ("sum", "min", "max"):
        keys = [k for k in ops if ops[k] == op]
        if not keys:
            continue
        values = torch.tensor(
            [local[k] if k in local else _IDENTITY[op] for k in keys], dtype=torch.float64
        )
        all_reduce_host(values, op=_OPS[op])
        result.update(zip(keys, values.tolist(), strict=True))
    return result


def _as_floats(values: dict) -> dict[str, float]:
    """Every value as a Python float; the tensors of each device read in one copy (one wait
    for the device, not one per metric)."""
    floats = {k: float(v) for k, v in values.items() if not isinstance(v, torch.Tensor)}
    by_device: dict[torch.device, dict[str, torch.Tensor]] = {}
    for key, value in values.items():
        if isinstance(value, torch.Tensor):
            by_device.setdefault(value.device, {})[key] = value.detach().reshape(())
    for tensors in by_device.values():
        read = torch.stack([t.double() for t in tensors.values()]).tolist()
        floats.update(zip(tensors, read, strict=True))
    return floats

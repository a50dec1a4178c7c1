"""Pick a weight transport by name.

============  ==============================================================================
inprocess     trainer and engine share a process: buckets go straight to ``update_weights``
gloo / nccl   broadcast from the trainer's rank 0 to rollout processes over a dedicated group
              (``group=`` from :func:`new_weight_sync_group`, or ``rendezvous=`` for a
              standalone TCPStore group between separately launched jobs)
checkpoint    safetensors bucket files + manifest in a shared directory, atomically published
============  ==============================================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from oumi_megatron.rollout.base import RolloutEngine
from oumi_megatron.rollout.buckets import DEFAULT_BUCKET_BYTES, bucketize
from oumi_megatron.rollout.transports import (
    BroadcastWeightReceiver,
    BroadcastWeightSender,
    CheckpointWeightReceiver,
    CheckpointWeightSender,
    GroupBroadcaster,
    InProcessWeightReceiver,
    InProcessWeightSender,
    StoreBroadcaster,
    SyncStats,
    WeightReceiver,
    WeightSender,
    new_weight_sync_group,
)

TRANSPORTS = ("inprocess", "gloo", "nccl", "checkpoint")

__all__ = [
    "TRANSPORTS",
    "StoreRendezvous",
    "SyncStats",
    "WeightReceiver",
    "WeightSender",
    "bucketize",
    "make_weight_receiver",
    "make_weight_sender",
    "new_weight_sync_group",
]


@dataclass(frozen=True)
class StoreRendezvous:
    """Where a standalone weight-sync group meets: this process's ``rank`` of ``world_size``
    (the trainer sender is rank 0 and hosts the TCPStore at ``host:port``)."""

    host: str
    port: int
    rank: int
    world_size: int
    timeout_s: float = 300.0


def _check(transport: str) -> None:
    if transport not in TRANSPORTS:
        raise ValueError(f"unknown weight transport {transport!r}; choose one of {TRANSPORTS}")


def _broadcaster(
    transport: str,
    group: dist.ProcessGroup | None,
    rendezvous: StoreRendezvous | None,
    device: torch.device | str | None,
) -> GroupBroadcaster | StoreBroadcaster:
    device = torch.device(device) if device is not None else None
    if (group is None) == (rendezvous is None):
        raise ValueError(f"{transport} transport needs exactly one of group= or rendezvous=")
    if group is not None:
        backend = str(dist.get_backend(group))
        if transport not in backend:
            raise ValueError(f"{transport} transport given a group with backend {backend!r}")
        return GroupBroadcaster(group, device)
    assert rendezvous is not None
    return StoreBroadcaster.create(
        rendezvous.host,
        rendezvous.port,
        rendezvous.rank,
        rendezvous.world_size,
        backend=transport,
        timeout_s=rendezvous.timeout_s,
        device=device,
    )


def make_weight_sender(
    transport: str,
    *,
    engine: RolloutEngine | None = None,
    group: dist.ProcessGroup | None = None,
    rendezvous: StoreRendezvous | None = None,
    src: int = 0,
    directory: str | Path | None = None,
    bucket_bytes: int = DEFAULT_BUCKET_BYTES,
    device: torch.device | str | None = None,
    keep_versions: int = 2,
) -> WeightSender:
    """Trainer-side sender; ``src`` is the sender's rank inside the broadcast group."""
    _check(transport)
    if transport == "inprocess":
        if engine is None:
            raise ValueError("inprocess transport needs engine=")
        return InProcessWeightSender(engine, bucket_bytes)
    if transport == "checkpoint":
        if directory is None:
            raise ValueError("checkpoint transport needs directory=")
        return CheckpointWeightSender(directory, bucket_bytes, keep_versions)
    return BroadcastWeightSender(
        _broadcaster(transport, group, rendezvous, device), src, bucket_bytes
    )


def make_weight_receiver(
    transport: str,
    *,
    group: dist.ProcessGroup | None = None,
    rendezvous: StoreRendezvous | None = None,
    src: int = 0,
    directory: str | Path | None = None,
    device: torch.device | str | None = None,
    timeout_s: float = 0.0,
) -> WeightReceiver:
    """Rollout-side receiver matching :func:`make_weight_sender`'s transport."""
    _check(transport)
    if transport == "inprocess":
        return InProcessWeightReceiver()
    if transport == "checkpoint":
        if directory is None:
            raise ValueError("checkpoint transport needs directory=")
        return CheckpointWeightReceiver(directory, device or "cpu", timeout_s)
    return BroadcastWeightReceiver(_broadcaster(transport, group, rendezvous, device), src)

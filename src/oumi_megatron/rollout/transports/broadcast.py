"""gloo / nccl broadcast from the trainer's rank 0 to rollout processes.

Wire format, per bucket (all broadcast from ``src`` over a dedicated group)::

    header  int64[2]  = (len(meta_json), total_bytes)     (0, 0) ends the sync
    meta    uint8[len] = BucketMeta JSON: names, shapes, dtypes, byte offsets
    payload uint8[total_bytes] = the packed bucket

Two ways to get the group (see :class:`GroupBroadcaster` and :class:`StoreBroadcaster`):

- inside one ``torch.distributed`` world (trainer and rollout ranks launched together):
  ``torch.distributed.new_group(ranks=[trainer_rank0, *rollout_ranks])``. ``new_group`` is a
  collective of the *whole* world: every rank must call it, members or not.
- between separately launched jobs: a ``TCPStore`` rendezvous and a bare
  ``ProcessGroupGloo``/``ProcessGroupNCCL`` that is not registered with any default world
  (so it cannot clash with the trainer's Megatron groups).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Protocol

import torch
import torch.distributed as dist

from oumi_megatron.rollout.base import RolloutEngine
from oumi_megatron.rollout.buckets import (
    DEFAULT_BUCKET_BYTES,
    BucketMeta,
    bucketize,
    pack_bucket,
    unpack_bucket,
)
from oumi_megatron.rollout.transports.base import SyncStats, WeightReceiver, WeightSender


class Broadcaster(Protocol):
    device: torch.device

    def broadcast(self, tensor: torch.Tensor, src: int, async_op: bool = False):
        """In-place broadcast of ``tensor`` from group rank ``src`` to every member; with
        ``async_op`` returns a work handle to ``wait()`` on (``tensor`` must stay alive)."""


def default_device(backend: str) -> torch.device:
    """gloo moves host tensors; nccl needs tensors on this process's current GPU."""
    if backend == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


class GroupBroadcaster:
    """A group registered with the current world (``new_group`` or the default group)."""

    def __init__(self, group: dist.ProcessGroup | None, device: torch.device | None = None):
        self.group = group
        self.device = device or default_device(dist.get_backend(group))

    def broadcast(self, tensor: torch.Tensor, src: int, async_op: bool = False):
        return dist.broadcast(tensor, group=self.group, group_src=src, async_op=async_op)

    def close(self) -> None:
        if self.group is not None:
            dist.destroy_process_group(self.group)


class StoreBroadcaster:
    """A standalone group from a ``TCPStore`` rendezvous; rank 0 hosts the store."""

    def __init__(self, group: dist.ProcessGroup, device: torch.device) -> None:
        self.group = group
        self.device = device

    @classmethod
    def create(
        cls,
        host: str,
        port: int,
        rank: int,
        world_size: int,
        backend: str = "gloo",
        timeout_s: float = 300.0,
        device: torch.device | None = None,
    ) -> StoreBroadcaster:
        timeout = timedelta(seconds=timeout_s)
        store = dist.TCPStore(host, port, world_size, rank == 0, timeout=timeout)
        return cls.on_store(store, rank, world_size, backend, timeout_s, device)

    @classmethod
    def on_store(
        cls,
        store: dist.Store,
        rank: int,
        world_size: int,
        backend: str = "gloo",
        timeout_s: float = 300.0,
        device: torch.device | None = None,
    ) -> StoreBroadcaster:
        """The group on an existing store (shared with other traffic under its own prefix)."""
        timeout = timedelta(seconds=timeout_s)
        store = dist.PrefixStore("oumi_megatron_weight_sync", store)
        if backend == "gloo":
            group = dist.ProcessGroupGloo(store, rank, world_size, timeout)
        elif backend == "nccl":
            group = dist.ProcessGroupNCCL(store, rank, world_size)
        else:
            raise ValueError(f"backend must be 'gloo' or 'nccl', got {backend!r}")
        return cls(group, device or default_device(backend))

    def broadcast(self, tensor: torch.Tensor, src: int, async_op: bool = False):
        options = dist.BroadcastOptions()
        options.rootRank = src
        work = self.group.broadcast([tensor], options)
        if not async_op:
            work.wait()
            return None
        return work

    def close(self) -> None:
        shutdown = getattr(self.group, "shutdown", None)
        if callable(shutdown):
            shutdown()


def _bytes_tensor(data: bytes, device: torch.device) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).to(device)


def _wait(in_flight: list) -> None:
    if in_flight:
        for work in in_flight[0]:
            work.wait()


class BroadcastWeightSender(WeightSender):
    """Runs on the trainer rank that is ``src`` in the weight-sync group."""

    def __init__(
        self, broadcaster: Broadcaster, src: int = 0, bucket_bytes: int = DEFAULT_BUCKET_BYTES
    ) -> None:
        self.broadcaster = broadcaster
        self.src = src
        self.bucket_bytes = bucket_bytes

    def send(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> SyncStats:
        """Bucket k+1 is gathered and packed while bucket k is on the wire: at most two
        buckets' buffers are alive at once."""
        stats = SyncStats()
        device = self.broadcaster.device
        in_flight: list = []  # (work handles, the tensors they send) of the previous bucket
        for bucket in bucketize(named_tensors, self.bucket_bytes):
            flat, meta = pack_bucket(bucket, device=device)
            meta_bytes = meta.to_bytes()
            header = torch.tensor([len(meta_bytes), meta.total_bytes], device=device)
            tensors = [header, _bytes_tensor(meta_bytes, device), flat]
            works = [self.broadcaster.broadcast(t, self.src, async_op=True) for t in tensors]
            _wait(in_flight)
            in_flight = [works, tensors]
            stats.add_bucket(bucket)
        _wait(in_flight)
        self.broadcaster.broadcast(torch.zeros(2, dtype=torch.long, device=device), self.src)
        return stats.done()

    def close(self) -> None:
        getattr(self.broadcaster, "close", lambda: None)()


class BroadcastWeightReceiver(WeightReceiver):
    """Runs on each rollout process of the group; one call receives one full sync."""

    def __init__(self, broadcaster: Broadcaster, src: int = 0) -> None:
        self.broadcaster = broadcaster
        self.src = src

    def receive_into(self, engine: RolloutEngine) -> SyncStats:
        stats = SyncStats()
        device = self.broadcaster.device
        while True:
            header = torch.zeros(2, dtype=torch.long, device=device)
            self.broadcaster.broadcast(header, self.src)
            meta_len, total_bytes = (int(v) for v in header.tolist())
            if meta_len == 0:
                break
            meta_buf = torch.empty(meta_len, dtype=torch.uint8, device=device)
            self.broadcaster.broadcast(meta_buf, self.src)
            meta = BucketMeta.from_bytes(bytes(meta_buf.cpu().tolist()))
            flat = torch.empty(total_bytes, dtype=torch.uint8, device=device)
            self.broadcaster.broadcast(flat, self.src)
            bucket = unpack_bucket(flat, meta)
            engine.update_weights(bucket)
            stats.add_bucket(bucket)
        engine.finish_weight_update()
        return stats.done()

    def close(self) -> None:
        getattr(self.broadcaster, "close", lambda: None)()


def new_weight_sync_group(
    sender_rank: int, receiver_ranks: Iterable[int], backend: str = "gloo"
) -> tuple[dist.ProcessGroup | None, int]:
    """``new_group`` of the sender and receivers within the current world.

    Collective over the *whole* default world: call it on every rank with the same arguments
    (non-members get ``None``). Returns ``(group, src)`` where ``src`` is the sender's rank
    inside the group (``new_group`` orders members by global rank).
    """
    members = sorted({sender_rank, *receiver_ranks})
    group = dist.new_group(ranks=members, backend=backend)
    if dist.get_rank() not in members:
        group = None
    return group, members.index(sender_rank)

"""Disaggregated rollout: workers on nodes that do not train, fed by the trainer's rank 0.

A torchrun job with ``megatron.rollout_nodes: K`` runs its last K nodes as rollout workers (one
engine per process, on its own GPU). They meet the trainer's global rank 0 at a ``TCPStore`` it
hosts on ``MASTER_ADDR:MASTER_PORT+1`` (or ``OUMI_MEGATRON_ROLLOUT_PORT``):

- commands and their replies travel as JSON through the store (no pickle crosses the network):
  ``cmd/<worker>/<seq>`` → ``reply/<worker>/<seq>``;
- weights travel over a gloo/NCCL broadcast group on the same store, in the bucket protocol of
  :mod:`oumi_megatron.rollout.transports.broadcast` (trainer rank 0 is the source);
- each worker bumps ``beat/<worker>`` every second from a thread. The trainer fails the step
  with the worker's traceback (``error/<worker>``), when its heartbeat stops, or when a reply
  takes longer than ``timeout_s``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from oumi_megatron.heap import freeze_long_lived
from oumi_megatron.rollout.base import (
    RolloutEngine,
    RolloutSample,
    SamplingParams,
    merge_chunks,
    split_prompts,
)
from oumi_megatron.rollout.factory import EngineSpec, build_engine
from oumi_megatron.rollout.remote import RolloutProcessError
from oumi_megatron.rollout.transports import SyncStats, WeightSender
from oumi_megatron.rollout.transports.broadcast import (
    BroadcastWeightReceiver,
    BroadcastWeightSender,
    StoreBroadcaster,
)

HEARTBEAT_S = 1.0
SILENCE_S = 30.0  # a worker whose heartbeat stalls this long is reported as gone
_POLL_S = 0.05


@dataclasses.dataclass(frozen=True)
class WorkerAddress:
    """Where the trainer's rank 0 hosts the store, and how many workers join it."""

    host: str
    port: int
    num_workers: int
    timeout_s: float = 600.0

    @classmethod
    def from_env(cls, num_workers: int, timeout_s: float = 600.0) -> WorkerAddress:
        port = os.environ.get("OUMI_MEGATRON_ROLLOUT_PORT")
        port = int(port) if port else int(os.environ.get("MASTER_PORT", "29500")) + 1
        return cls(os.environ.get("MASTER_ADDR", "127.0.0.1"), port, num_workers, timeout_s)


def _encode(value: Any) -> bytes:
    return json.dumps(value).encode()


class RolloutWorkers(RolloutEngine):
    """The trainer's handle on the rollout workers (global rank 0 only)."""

    def __init__(
        self,
        address: WorkerAddress,
        transport: str,
        bucket_bytes: int,
        device: torch.device | None = None,
    ) -> None:
        self.address, self.timeout_s = address, address.timeout_s
        timeout = timedelta(seconds=address.timeout_s)
        self.store = dist.TCPStore(address.host, address.port, is_master=True, timeout=timeout,
                                   wait_for_workers=False)  # fmt: skip
        self._seq = 0
        for worker in range(address.num_workers):
            self._wait_for(worker, f"ready/{worker}", "start")
        broadcaster = StoreBroadcaster.on_store(self.store, 0, address.num_workers + 1,
                                                transport, address.timeout_s, device)  # fmt: skip
        self._sender = _WorkersWeightSender(
            self, BroadcastWeightSender(broadcaster, 0, bucket_bytes)
        )

    # ---- messages ------------------------------------------------------------------------

    def _post_all(self, command: str, per_worker: list[Any] | None = None) -> int:
        self._seq += 1
        for worker in range(self.address.num_workers):
            args = per_worker[worker] if per_worker is not None else None
            self.store.set(f"cmd/{worker}/{self._seq}", _encode([command, args]))
        return self._seq

    def _replies(self, seq: int, what: str) -> list[Any]:
        replies = []
        for worker in range(self.address.num_workers):
            key = f"reply/{worker}/{seq}"
            self._wait_for(worker, key, what)
            replies.append(json.loads(self.store.get(key)))
            self.store.delete_key(key)
        return replies

    def _wait_for(self, worker: int, key: str, what: str) -> None:
        """Until `key` exists; raises with the worker's traceback, on a stalled heartbeat, or
        after `timeout_s`."""
        start = time.monotonic()
        beat, beat_seen = -1, start
        while not self.store.check([key]):
            if self.store.check([f"error/{worker}"]):
                error = self.store.get(f"error/{worker}").decode()
                raise RolloutProcessError(f"rollout worker {worker} failed ({what}):\n{error}")
            now = time.monotonic()
            current = self.store.add(f"beat/{worker}", 0)
            if current != beat:
                beat, beat_seen = current, now
            elif beat > 0 and now - beat_seen > SILENCE_S:  # it had been beating
                raise RolloutProcessError(
                    f"rollout worker {worker} stopped answering ({what}): no heartbeat for "
                    f"{SILENCE_S:.0f} s; its node's log has the cause"
                )
            if now - start > self.timeout_s:
                raise RolloutProcessError(
                    f"rollout worker {worker} did not answer within {self.timeout_s:.0f} s "
                    f"({what}); raise megatron.rollout_timeout_s if it is only slow"
                )
            time.sleep(_POLL_S)

    # ---- engine interface ----------------------------------------------------------------

    def generate(
        self,
        prompt_token_ids: list[list[int]],
        params: SamplingParams,
        prompt_seeds: list[int] | None = None,
    ) -> list[RolloutSample]:
        """Contiguous prompt chunks per worker, each prompt with its own seed."""
        return self.submit(prompt_token_ids, params, prompt_seeds)()

    def submit(
        self,
        prompt_token_ids: list[list[int]],
        params: SamplingParams,
        prompt_seeds: list[int] | None = None,
    ) -> Callable[[], list[RolloutSample]]:
        """The workers start generating; the returned function waits for their replies."""
        chunks = split_prompts(prompt_token_ids, params, prompt_seeds, self.address.num_workers)
        seq = self._post_all(
            "generate", [[ids, dataclasses.asdict(params), seeds] for _, ids, seeds in chunks]
        )
        starts = [start for start, _, _ in chunks]

        def wait() -> list[RolloutSample]:
            replies = self._replies(seq, "generate")
            return merge_chunks(starts, [[RolloutSample(**raw) for raw in c] for c in replies])

        return wait

    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        raise TypeError("rollout workers receive weights through weight_sender()")

    def weight_sender(self) -> WeightSender:
        return self._sender

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._replies(self._post_all("close"), "close")
        self._sender.close()


class _WorkersWeightSender(WeightSender):
    def __init__(self, workers: RolloutWorkers, sender: WeightSender) -> None:
        self.workers, self.sender = workers, sender

    def send(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> SyncStats:
        seq = self.workers._post_all("receive")
        stats = self.sender.send(named_tensors)
        self.workers._replies(seq, "weight sync")
        return stats

    def close(self) -> None:
        self.sender.close()


# ---- worker side ---------------------------------------------------------------------------------


def serve_rollout_worker(spec: EngineSpec, transport: str, address: WorkerAddress, index: int):
    """Entry point of a rollout worker process: build the engine, then answer commands until
    the trainer says close. A failure is reported to the trainer, then raised."""
    timeout = timedelta(seconds=address.timeout_s)
    store = dist.TCPStore(address.host, address.port, is_master=False, timeout=timeout)
    stop = threading.Event()
    threading.Thread(target=_heartbeat, args=(address, index, stop), daemon=True).start()
    receiver = None
    try:
        device = None
        if transport == "nccl":
            device = torch.device(spec.device)
            torch.cuda.set_device(device)
        _progress(f"rollout worker {index} (pid {os.getpid()}, {spec.device}): building engine")
        engine = build_engine(spec)
        freeze_long_lived()  # the engine is built: its objects live all run (`heap.py`)
        store.set(f"ready/{index}", b"1")
        broadcaster = StoreBroadcaster.on_store(store, index + 1, address.num_workers + 1,
                                                transport, address.timeout_s, device)  # fmt: skip
        receiver = BroadcastWeightReceiver(broadcaster, 0)
        _progress(f"rollout worker {index}: ready")
        _serve(store, index, engine, receiver)
    except BaseException:
        with contextlib.suppress(Exception):
            store.set(f"error/{index}", traceback.format_exc().encode())
        raise
    finally:
        stop.set()
        if receiver is not None:
            receiver.close()


def _serve(store, index: int, engine: RolloutEngine, receiver) -> None:
    seq = 0
    while True:
        seq += 1
        key = f"cmd/{index}/{seq}"
        store.wait([key], timedelta(days=7))  # the trainer may train for long between commands
        command, args = json.loads(store.get(key))
        store.delete_key(key)
        if command == "generate":
            prompts, params, seeds = args
            samples = engine.generate(prompts, SamplingParams(**params), prompt_seeds=seeds)
            reply: Any = [dataclasses.asdict(s) for s in samples]
        elif command == "receive":
            reply = dataclasses.asdict(receiver.receive_into(engine))
        elif command == "close":
            reply = None
        else:
            raise ValueError(f"unknown rollout command {command!r}")
        store.set(f"reply/{index}/{seq}", _encode(reply))
        if command == "close":
            return


def _heartbeat(address: WorkerAddress, index: int, stop: threading.Event) -> None:
    """Own connection: the main thread may be inside a long generate or broadcast."""
    with contextlib.suppress(Exception):
        timeout = timedelta(seconds=address.timeout_s)
        store = dist.TCPStore(address.host, address.port, is_master=False, timeout=timeout)
        while not stop.wait(HEARTBEAT_S):
            store.add(f"beat/{index}", 1)


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)

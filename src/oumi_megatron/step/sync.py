"""One weight-sync object per rank: the export source, the transport and the engine's sleep/wake.

The loop calls `release()` before the update and `sync()` after it, and never asks which engine
or transport it has. Per step, as the fastest colocated trainers order it:

    release(): the engine sleeps (vLLM frees its weights and KV cache for the update)
    update
    sync():    cached training memory is returned to the device
               weights stream from the Bridge export, on the trainer's device, bucket by bucket;
               a sleeping vLLM engine wakes its weights only when the first bucket arrives
               the engine wakes the rest (its KV cache) once every weight is in place

Where the export moves no data between ranks, syncs after the first skip it: one batched copy
from the parameters into the engine's weights (`step/direct_copy.py`, `sync/direct` = 1).

The Bridge export is collective over the model-parallel group: every rank walks it, ranks
without an engine drop each tensor as soon as it is produced (nothing of the whole model is
kept anywhere). Transports, by `build_weight_sync`:

=================  ===========================================================================
colocated          every rank with an engine loads the buckets in its own process (no copy
(auto/inprocess)   through the host: the export stays on the device the policy is on)
gloo / nccl        rank 0 broadcasts the buckets to the rollout processes it started, or to
                   the workers of the rollout nodes (megatron.rollout_nodes)
checkpoint         rank 0 writes a versioned safetensors directory; every engine loads it
=================  ===========================================================================
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from oumi_megatron.parallel.ranks import barrier
from oumi_megatron.rollout.base import RolloutEngine
from oumi_megatron.rollout.transports import SyncStats, WeightReceiver, WeightSender

Export = Callable[[], Iterable[tuple[str, torch.Tensor]]]
IndexExport = Callable[[], tuple[object, Iterable[tuple[str, torch.Tensor]]]]
logger = logging.getLogger(__name__)


class WeightSync:
    """Moves the policy's weights into this rank's rollout engine (if it has one)."""

    def __init__(
        self,
        export: Export,
        engine: RolloutEngine | None,
        sender: WeightSender | None = None,
        receiver: WeightReceiver | None = None,
        enabled: bool = True,
        published: bool = False,
        index_export: IndexExport | None = None,
    ) -> None:
        """`published`: the sender publishes a version that receivers read after a barrier
        (checkpoint transport); every rank takes part in the barrier. `index_export`: the
        export's element map (`model/export_index.py`), given where the export moves no data
        between ranks; with it, syncs after the first copy straight from the parameters into
        the engine (`step/direct_copy.py`)."""
        self.export, self.engine = export, engine
        self.sender, self.receiver = sender, receiver
        self.enabled, self.published = enabled, published
        self.index_export = index_export
        self.direct = None
        self._direct_tried: object = None

    def release(self) -> None:
        """Before the update: the engine gives its accelerator memory back."""
        if self.engine is not None:
            self.engine.sleep()

    def sync(self) -> dict[str, float]:
        """After the update: new weights into the engine, then the engine is fully awake."""
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # the update's cached blocks, for the engine to wake into
        stats, direct, copy_seconds = SyncStats(), None, 0.0
        start = _clock()
        if self.enabled:
            direct = self._usable_direct()
            if direct is not None:
                copy_seconds = self._write_direct(direct)
                stats.num_bytes, stats.num_buckets = direct.num_bytes, 1
            else:
                stats = self._transfer()
                self._build_direct()
        weights_done = _clock()
        if self.engine is not None:
            self.engine.wake_up()
        return {
            "sync/bytes": float(stats.num_bytes),
            "sync/buckets": float(stats.num_buckets),
            "sync/direct": float(direct is not None),
            "sync/weights_s": weights_done - start,
            "sync/copy_s": copy_seconds,
            "sync/wake_s": _clock() - weights_done,
        }

    def _transfer(self) -> SyncStats:
        weights = self.export()
        stats = SyncStats()
        if self.sender is not None:
            stats = self.sender.send(weights)
        else:
            for _ in weights:  # collective: every rank of the model-parallel group walks it
                pass
        if self.published:
            barrier()  # the writer has published the version
        if self.receiver is not None and self.engine is not None:
            stats = self.receiver.receive_into(self.engine)
        return stats

    def _write_direct(self, direct) -> float:
        """The direct copies into the engine; returns the seconds of the copies alone."""
        seconds = 0.0

        def copy() -> None:
            nonlocal seconds
            start = _clock()
            direct.copy()
            seconds = _clock() - start

        self.engine.write_weights(copy)
        return seconds

    def _usable_direct(self):
        if self.direct is None or self.engine is None:
            return None
        return self.direct if self.direct.usable(self.engine.copy_targets()) else None

    def _build_direct(self) -> None:
        """Right after a transfer (engine and parameters agree): compose the direct copies."""
        if self.index_export is None or self.engine is None:
            return
        targets = self.engine.copy_targets()
        if targets is None or targets is self._direct_tried:
            return
        self._direct_tried = targets
        from oumi_megatron.step.direct_copy import DirectCopy

        index, exported = self.index_export()
        plan = DirectCopy.build(targets, index, exported)
        if plan is not None and not plan.matches_engine():
            logger.info("direct weight copy off: the composed copies disagree with the engine")
            plan = None
        self.direct = plan
        if plan is not None:
            logger.info("weight sync: %d direct copies (%.2f GB) from the parameters from the "
                        "next sync on", len(plan.sources), plan.num_bytes / 1e9)  # fmt: skip

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
        for end in (self.sender, self.receiver):
            if end is not None:
                end.close()


def build_weight_sync(
    method: str,
    export: Export,
    engine: RolloutEngine | None,
    *,
    enabled: bool,
    is_writer: bool,
    bucket_bytes: int,
    directory: Path,
    index_export: IndexExport | None = None,
) -> WeightSync:
    """The weight sync for weight_sync_method `method` on this rank.

    `engine`: this rank's engine (None on ranks without one); `is_writer`: the rank that sends
    for the one-sender transports (global rank 0); `index_export`: see `WeightSync` (used by
    the colocated transport).
    """
    from oumi_megatron.rollout.remote import RemoteRolloutEngines
    from oumi_megatron.rollout.weight_sync import make_weight_receiver, make_weight_sender
    from oumi_megatron.rollout.workers import RolloutWorkers

    if isinstance(engine, RemoteRolloutEngines | RolloutWorkers):  # rank 0 feeds them
        return WeightSync(export, engine, engine.weight_sender(), enabled=enabled)
    if method == "checkpoint":
        sender = None
        if is_writer:
            sender = make_weight_sender(
                "checkpoint", directory=directory, bucket_bytes=bucket_bytes
            )
        receiver = None
        if engine is not None:
            receiver = make_weight_receiver("checkpoint", directory=directory)
        return WeightSync(export, engine, sender, receiver, enabled=enabled, published=True)
    sender = None
    if engine is not None:
        sender = make_weight_sender("inprocess", engine=engine, bucket_bytes=bucket_bytes)
    return WeightSync(export, engine, sender, enabled=enabled, index_export=index_export)


def _clock() -> float:
    """Seconds, after the device's queued work (the phases below are device work)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter()

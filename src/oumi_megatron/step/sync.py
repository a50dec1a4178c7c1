"""One weight-sync object per rank: the export source, the transport and the engine's sleep/wake.

The loop calls `release()` before the update and `sync()` after it, and never asks which engine
or transport it has. Per step, as the fastest colocated trainers order it:

    release(): the engine sleeps (vLLM frees its weights and KV cache for the update)
    update
    sync():    cached training memory is returned to the device
               weights stream from the Bridge export, on the trainer's device, bucket by bucket;
               a sleeping vLLM engine wakes its weights only when the first bucket arrives
               the engine wakes the rest (its KV cache) once every weight is in place

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

from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from oumi_megatron.parallel.ranks import barrier
from oumi_megatron.rollout.base import RolloutEngine
from oumi_megatron.rollout.transports import SyncStats, WeightReceiver, WeightSender

Export = Callable[[], Iterable[tuple[str, torch.Tensor]]]


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
    ) -> None:
        """`published`: the sender publishes a version that receivers read after a barrier
        (checkpoint transport); every rank takes part in the barrier."""
        self.export, self.engine = export, engine
        self.sender, self.receiver = sender, receiver
        self.enabled, self.published = enabled, published

    def release(self) -> None:
        """Before the update: the engine gives its accelerator memory back."""
        if self.engine is not None:
            self.engine.sleep()

    def sync(self) -> dict[str, float]:
        """After the update: new weights into the engine, then the engine is fully awake."""
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # the update's cached blocks, for the engine to wake into
        stats = SyncStats()
        if self.enabled:
            stats = self._transfer()
        if self.engine is not None:
            self.engine.wake_up()
        return {"sync/bytes": float(stats.num_bytes), "sync/buckets": float(stats.num_buckets)}

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
) -> WeightSync:
    """The weight sync for weight_sync_method `method` on this rank.

    `engine`: this rank's engine (None on ranks without one); `is_writer`: the rank that sends
    for the one-sender transports (global rank 0).
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
    return WeightSync(export, engine, sender, enabled=enabled)

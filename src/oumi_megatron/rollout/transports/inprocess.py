"""Colocated transport: the trainer holds the engine and hands it the buckets directly."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from oumi_megatron.rollout.base import RolloutEngine
from oumi_megatron.rollout.buckets import DEFAULT_BUCKET_BYTES, bucketize
from oumi_megatron.rollout.transports.base import SyncStats, WeightReceiver, WeightSender


class InProcessWeightSender(WeightSender):
    """Calls ``engine.update_weights`` once per bucket, then ``finish_weight_update``.

    Tensors are handed over as they come (no packing, no copy): the engine copies them into
    its own parameters. Bucketing still bounds how many gathered tensors are alive at once.
    """

    def __init__(self, engine: RolloutEngine, bucket_bytes: int = DEFAULT_BUCKET_BYTES) -> None:
        self.engine = engine
        self.bucket_bytes = bucket_bytes

    def send(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> SyncStats:
        stats = SyncStats()
        for bucket in bucketize(named_tensors, self.bucket_bytes):
            self.engine.update_weights(bucket)
            stats.add_bucket(bucket)
        self.engine.finish_weight_update()
        return stats.done()


class InProcessWeightReceiver(WeightReceiver):
    """Nothing to receive: the sender already applied the weights to the shared engine."""

    def receive_into(self, engine: RolloutEngine) -> SyncStats:
        return SyncStats().done()

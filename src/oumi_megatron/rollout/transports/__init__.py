"""Weight transports: trainer-side senders and rollout-side receivers."""

from oumi_megatron.rollout.transports.base import SyncStats, WeightReceiver, WeightSender
from oumi_megatron.rollout.transports.broadcast import (
    BroadcastWeightReceiver,
    BroadcastWeightSender,
    GroupBroadcaster,
    StoreBroadcaster,
    new_weight_sync_group,
)
from oumi_megatron.rollout.transports.checkpoint import (
    CheckpointWeightReceiver,
    CheckpointWeightSender,
    iter_checkpoint_buckets,
    latest_version,
)
from oumi_megatron.rollout.transports.inprocess import (
    InProcessWeightReceiver,
    InProcessWeightSender,
)

__all__ = [
    "BroadcastWeightReceiver",
    "BroadcastWeightSender",
    "CheckpointWeightReceiver",
    "CheckpointWeightSender",
    "GroupBroadcaster",
    "InProcessWeightReceiver",
    "InProcessWeightSender",
    "StoreBroadcaster",
    "SyncStats",
    "WeightReceiver",
    "WeightSender",
    "iter_checkpoint_buckets",
    "latest_version",
    "new_weight_sync_group",
]

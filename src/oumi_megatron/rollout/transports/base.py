"""The transport contract: a sender on the trainer, a receiver beside each rollout engine."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch

from oumi_megatron.rollout.base import RolloutEngine
from oumi_megatron.rollout.buckets import tensor_nbytes


@dataclass
class SyncStats:
    """What one weight sync moved (for logging)."""

    num_tensors: int = 0
    num_buckets: int = 0
    num_bytes: int = 0
    seconds: float = 0.0
    _start: float = field(default_factory=time.perf_counter, repr=False)

    def add_bucket(self, bucket: Iterable[tuple[str, torch.Tensor]]) -> None:
        for _, tensor in bucket:
            self.num_tensors += 1
            self.num_bytes += tensor_nbytes(tensor)
        self.num_buckets += 1

    def done(self) -> SyncStats:
        self.seconds = time.perf_counter() - self._start
        return self


class WeightSender(ABC):
    """Trainer side: pushes one full set of HF-named weights per :meth:`send`."""

    @abstractmethod
    def send(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> SyncStats:
        """Stream ``(hf_name, tensor)`` pairs to the rollout side, bucket by bucket."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (process groups, files)."""


class WeightReceiver(ABC):
    """Rollout side: applies one sync to an engine per :meth:`receive_into`."""

    @abstractmethod
    def receive_into(self, engine: RolloutEngine) -> SyncStats:
        """Apply every bucket of one sync, then call ``engine.finish_weight_update()``."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (process groups, files)."""

"""Replay a model's own `load_weights` as plain copies (vLLM: fused q/k/v and gate/up params).

The first sync runs the engine's `load_weights` under a dispatch mode that records every
`aten.copy_` whose source is a view of an incoming tensor: (destination view, source name,
source view as size/stride/offset). If those copies cover every parameter of the model entirely
and nothing else was written from outside the inputs, later syncs skip `load_weights` (its name
parsing, per-tensor Python and loaders) and do one `torch._foreach_copy_` per bucket, with the
same bits landing in the same places. Anything the recorder cannot explain (a cast, a computed
value, a parameter left uncovered) keeps `load_weights` for good. ``OUMI_MEGATRON_COPY_PLAN=0``
keeps it always (and with it the direct copies of `step/direct_copy.py`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable

import torch
from torch.utils._python_dispatch import TorchDispatchMode

Entry = tuple[torch.Tensor, tuple[int, ...], tuple[int, ...], int]
logger = logging.getLogger(__name__)


class _CopyRecorder(TorchDispatchMode):
    def __init__(self, sources: list[tuple[str, torch.Tensor]]) -> None:
        super().__init__()
        self.sources = sources
        self.entries: dict[str, list[Entry]] = {}
        self.foreign = 0  # copies from something that is not a view of an input

    def _source(self, tensor: torch.Tensor) -> tuple[str, torch.Tensor] | None:
        storage = tensor.untyped_storage().data_ptr()
        for name, source in self.sources:
            if source.untyped_storage().data_ptr() == storage:
                start = source.storage_offset()
                if start <= tensor.storage_offset() < start + max(source.numel(), 1):
                    return name, source
        return None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func is torch.ops.aten.copy_.default:
            destination, source = args[0], args[1]
            found = self._source(source) if isinstance(source, torch.Tensor) else None
            if found is None or source.dtype != destination.dtype:
                self.foreign += 1
            else:
                name, base = found
                offset = source.storage_offset() - base.storage_offset()
                self.entries.setdefault(name, []).append(
                    (destination, tuple(source.shape), tuple(source.stride()), offset)
                )
        return out


class CopyPlan:
    """Recorded copies of one model; `ready` once a whole sync was recorded and checked."""

    def __init__(self) -> None:
        self.entries: dict[str, list[Entry]] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.usable = os.environ.get("OUMI_MEGATRON_COPY_PLAN", "1") != "0"
        self.ready = False

    def load(
        self,
        load_weights: Callable[[Iterable[tuple[str, torch.Tensor]]], object],
        weights: list[tuple[str, torch.Tensor]],
    ) -> None:
        """Load one bucket: replayed when ready and every name is known, else through
        `load_weights` (recording while the first sync is in progress)."""
        if self.ready and all(self.shapes.get(name) == tuple(t.shape) for name, t in weights):
            self._replay(weights)
            return
        if self.ready or not self.usable:
            load_weights(iter(weights))
            return
        recorder = _CopyRecorder(weights)
        with recorder:
            load_weights(iter(weights))
        if recorder.foreign:
            self.usable = False
            logger.info("weight copy plan off: loading %s writes values that are not plain "
                        "copies of the incoming tensors (a cast or a computation)",
                        [name for name, _ in weights][:3])  # fmt: skip
        for name, tensor in weights:  # a name the loader skips (a tied lm_head) replays as nothing
            self.entries[name] = recorder.entries.get(name, [])
            self.shapes[name] = tuple(tensor.shape)

    def finish(self, model: torch.nn.Module) -> None:
        """End of the first sync: the plan is used from now on if it covers every parameter."""
        if self.ready or not self.usable:
            return
        self.usable = self.ready = _covers(model, self.entries)
        if not self.usable:
            self.entries.clear()
            logger.info("weight copy plan off: the recorded copies leave a parameter unwritten")

    def _replay(self, weights: list[tuple[str, torch.Tensor]]) -> None:
        destinations, sources = [], []
        for name, tensor in weights:
            for destination, size, stride, offset in self.entries[name]:
                sources.append(tensor.as_strided(size, stride, tensor.storage_offset() + offset))
                destinations.append(destination)
        if destinations:
            with torch.no_grad():
                torch._foreach_copy_(destinations, sources)


def _covers(model: torch.nn.Module, entries: dict[str, list[Entry]]) -> bool:
    """Whether the recorded destinations write every element of every parameter."""
    by_storage: dict[int, list[torch.Tensor]] = {}
    for copies in entries.values():
        for destination, *_ in copies:
            by_storage.setdefault(destination.untyped_storage().data_ptr(), []).append(destination)
    for parameter in model.parameters():
        data = parameter.data
        written = by_storage.get(data.untyped_storage().data_ptr())
        if not written or not data.is_contiguous():
            return False
        mask = torch.zeros(data.shape, dtype=torch.bool, device=data.device)
        for destination in written:
            offset = destination.storage_offset() - data.storage_offset()
            if not 0 <= offset < data.numel():
                continue
            mask.as_strided(destination.shape, destination.stride(), offset).fill_(True)
        if not bool(mask.all()):
            return False
    return True

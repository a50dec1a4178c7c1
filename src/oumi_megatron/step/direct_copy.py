"""Weights from the training parameters straight into the engine's: one batched copy per sync.

Two recordings, composed once after the first sync:

- the engine's copy plan (`rollout/copy_plan.py`): each engine weight, or part of one, is a
  view of one exported HF tensor;
- the export's element map (`model/export_index.py`): each exported element is an element of
  a training parameter.

Where the composition is a plain strided view of one parameter (identity, the QKV split, the
gate/up halves, tied embeddings: everything Bridge exports from a TP1 model of the dense
architectures), later syncs skip the export and the buckets and run one
`torch._foreach_copy_(engine views, parameter views)`: each byte is read once and written once.
Before it is used, the plan is checked element for element against the engine's weights the
first sync just loaded; any destination it cannot explain keeps the export path for good.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch

from oumi_megatron.model.export_index import ParameterIndex
from oumi_megatron.rollout.copy_plan import Entry

logger = logging.getLogger(__name__)


def strided_layout(numbers: torch.Tensor) -> tuple[int, list[int], list[int]] | None:
    """(first, sizes, strides) such that element k of `numbers` (row-major) is
    `first + sum(index_d * strides[d])` for the multi-index of k in `sizes`; None if no such
    layout with non-negative strides exists."""
    flat = numbers.reshape(-1)
    first = int(flat[0])
    if flat.numel() == 1:
        return first, [1], [1]
    sizes: list[int] = []
    strides: list[int] = []
    block = flat
    while block.numel() > 1:  # peel the innermost arithmetic run, then the runs of runs
        steps = block[1:] - block[:-1]
        breaks = torch.nonzero(steps != steps[0])
        run = int(breaks[0]) + 1 if breaks.numel() else block.numel()
        if block.numel() % run:
            return None
        sizes.insert(0, run)
        strides.insert(0, int(steps[0]))
        block = block[::run]
    if min(strides) < 0:
        return None
    expected = torch.full((), first, dtype=torch.int64, device=flat.device)
    for dim, (size, stride) in enumerate(zip(sizes, strides, strict=True)):
        shape = [1] * len(sizes)
        shape[dim] = size
        expected = expected + torch.arange(size, device=flat.device).view(shape) * stride
    if not torch.equal(expected.reshape(-1), flat):
        return None
    return first, sizes, strides


class DirectCopy:
    """Pairs (engine view, parameter view) that reproduce a whole sync."""

    def __init__(
        self,
        pairs: list[tuple[torch.Tensor, torch.Tensor]],
        targets: object,
        params: list[torch.Tensor],
    ) -> None:
        self.destinations = [d for d, _ in pairs]
        self.sources = [s for _, s in pairs]
        self.targets = targets  # the engine's recording this was built from
        self.params = params  # the sources are views of these parameters' storage
        self.num_bytes = sum(d.numel() * d.element_size() for d in self.destinations)
        self._pointers = self._param_pointers()

    @classmethod
    def build(
        cls,
        targets: dict[str, list[Entry]],
        index: ParameterIndex,
        exported: Iterable[tuple[str, torch.Tensor]],
    ) -> DirectCopy | None:
        """Compose the engine's recorded copies with the export's element numbers; None (with
        the reason logged) unless every destination is a strided view of one parameter."""
        pairs = []
        seen = set()
        for name, numbers in exported:
            seen.add(name)
            for destination, size, stride, offset in targets.get(name, []):
                view = numbers.as_strided(size, stride, numbers.storage_offset() + offset)
                pair = _pair(destination, view, index)
                if pair is None:
                    logger.info("direct weight copy off: %s is not a plain view", name)
                    return None
                pairs.append(pair)
        missing = sorted(set(targets) - seen)
        if missing:
            logger.info("direct weight copy off: %s not exported", missing[:3])
            return None
        return cls(pairs, targets, index.params)

    def matches_engine(self) -> bool:
        """Whether every destination already holds its source (true right after a sync)."""
        return all(torch.equal(d, s) for d, s in zip(self.destinations, self.sources, strict=True))

    def usable(self, targets: object) -> bool:
        """Still the engine's recording and still the same parameter storage."""
        return targets is self.targets and self._param_pointers() == self._pointers

    def copy(self) -> None:
        with torch.no_grad():
            torch._foreach_copy_(self.destinations, self.sources)

    def _param_pointers(self) -> list[int]:
        return [p.data_ptr() for p in self.params]


def _pair(
    destination: torch.Tensor, numbers: torch.Tensor, index: ParameterIndex
) -> tuple[torch.Tensor, torch.Tensor] | None:
    layout = strided_layout(numbers)
    if layout is None:
        return None
    first, sizes, strides = layout
    last = first + sum((size - 1) * stride for size, stride in zip(sizes, strides, strict=True))
    found = index.locate(first, last)
    if found is None:
        return None
    param, offset = found
    if param.dtype != destination.dtype or param.device != destination.device:
        return None
    try:
        target = destination.view(sizes)
    except RuntimeError:
        return None
    source = param.detach().as_strided(sizes, strides, param.storage_offset() + offset)
    return target, source

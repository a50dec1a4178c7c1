"""Where each element of Bridge's Hugging Face export comes from, found by exporting indices.

`index_export` runs Megatron-Bridge's own `export_hf_weights` once with every parameter replaced
by an int64 tensor that holds each element's position (its offset among all parameters plus
its flat index). What comes out under each HF name is then an exact map from that tensor's
elements to parameter elements: the QKV split, the gate/up chunking and tied embeddings are
whatever Bridge does, nothing of its mapping logic is restated here.

Only for a model-parallel group of one rank (TP = PP = CP = EP = 1): there the export moves no
data between ranks, so every exported element comes from this rank's parameters. The index
tensors are made one parameter at a time, so the probe holds one parameter's worth of int64
(plus its exported pieces) at once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch


@dataclass
class ParameterIndex:
    """Parameters numbered end to end: element i of `params[k]` is `starts[k] + i`."""

    params: list[torch.Tensor] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)
    total: int = 0
    _by_id: dict[int, int] = field(default_factory=dict)

    def add(self, param: torch.Tensor) -> int:
        """The number of `param`'s first element (each parameter is numbered once)."""
        key = id(param)
        if key not in self._by_id:
            if not param.is_contiguous():
                raise ValueError("index_export needs contiguous parameters")
            self._by_id[key] = len(self.params)
            self.params.append(param)
            self.starts.append(self.total)
            self.total += param.numel()
        return self.starts[self._by_id[key]]

    def locate(self, first: int, last: int) -> tuple[torch.Tensor, int] | None:
        """The parameter holding element numbers `first`..`last` and `first`'s offset in it."""
        for param, start in zip(self.params, self.starts, strict=True):
            if start <= first and last < start + param.numel():
                return param, first - start
        return None


class _IndexTasks:
    """Bridge's conversion tasks with each parameter swapped for its index tensor, made lazily
    (Bridge iterates the tasks once and asks for their count)."""

    def __init__(self, tasks: list, index: ParameterIndex) -> None:
        self.tasks, self.index = tasks, index

    def __len__(self) -> int:
        return len(self.tasks)

    def __iter__(self):
        for task in self.tasks:
            weight = getattr(task, "param_weight", None)
            if weight is None:
                yield task
                continue
            start = self.index.add(weight)
            numbers = torch.arange(
                start, start + weight.numel(), dtype=torch.int64, device=weight.device
            ).view(weight.shape)
            yield dataclasses.replace(task, param_weight=numbers)


def index_export(bridge, chunks: list[torch.nn.Module]) -> tuple[
    ParameterIndex, Iterator[tuple[str, torch.Tensor]]
]:  # fmt: skip
    """(the numbering, `(hf_name, element numbers)` in Bridge's export order).

    The numbering fills in as the export is walked: read it after the iterator is exhausted.
    """
    index = ParameterIndex()
    tasks = _IndexTasks(bridge.get_conversion_tasks(chunks), index)
    exported = bridge.export_hf_weights(
        chunks, cpu=False, show_progress=False, conversion_tasks=tasks
    )
    return index, ((name, tensor) for name, tensor in exported)

"""Loading checkpoints without running code from them.

Megatron's distributed checkpoints are torch DCP directories. DCP reads ``.metadata`` with
``pickle.load`` and non-tensor entries with ``torch.load(weights_only=False)``, so a crafted
checkpoint directory would run code on ``--resume``. Inside `trusted_loading()`:

- ``.metadata`` is read by an unpickler that builds only data: DCP's and Megatron's metadata
  dataclasses and enums, torch dtypes / layouts / memory formats / ``torch.Size``, and builtin
  containers. Any other global (``os.system``, ``builtins.exec``, a function, an arbitrary
  class) raises `UntrustedCheckpointError` naming it, before anything is called;
- every ``torch.load`` runs with ``weights_only=True`` (tensors, containers, numbers, strings).

Our own files beside the shards are JSON (trainer state, run identity, Megatron's
``metadata.json``) or ``weights_only`` torch files (RNG states).
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import functools
import io
import pickle
import re
import types

import torch


class UntrustedCheckpointError(pickle.UnpicklingError):
    """A checkpoint file asked to build something that is not plain data."""


_DATA_MODULES = ("torch.distributed.checkpoint", "megatron.core.dist_checkpointing")
_BUILTINS = {("builtins", n) for n in ("dict", "list", "tuple", "set", "frozenset", "int",
             "float", "complex", "str", "bytes", "bytearray", "bool", "slice", "object")}  # fmt: skip
_BUILTINS |= {("collections", "OrderedDict"), ("collections", "defaultdict"),
              ("_codecs", "encode"), ("copyreg", "_reconstructor"),
              ("torch.serialization", "_get_layout"),  # a layout by name
              ("pathlib", "PosixPath"), ("pathlib", "PurePosixPath"), ("pathlib", "Path")}  # fmt: skip


def _is_data_type(value: object) -> bool:
    return isinstance(value, type) and (
        dataclasses.is_dataclass(value)
        or issubclass(value, enum.Enum)
        or (issubclass(value, tuple) and hasattr(value, "_fields"))  # NamedTuple
    )


class _DataUnpickler(pickle.Unpickler):
    refusals: list[UntrustedCheckpointError] = []  # DCP may swallow the error: kept here

    def find_class(self, module: str, name: str):
        if (module, name) in _BUILTINS:
            return super().find_class(module, name)
        if module == "torch" and name == "Size":
            return torch.Size
        if module == "torch":
            value = getattr(torch, name, None)
            if isinstance(value, torch.dtype | torch.layout | torch.memory_format):
                return value
        if module.startswith(_DATA_MODULES):
            value = super().find_class(module, name)
            if _is_data_type(value):
                return value
        refusal = UntrustedCheckpointError(
            f"checkpoint metadata asks for {module}.{name}, which is not checkpoint data: "
            f"refusing to load it (a checkpoint directory from an untrusted source?)"
        )
        self.refusals.append(refusal)
        raise refusal


def data_pickle_load(file, **kwargs):
    """``pickle.load`` that builds only checkpoint data (see the module docstring)."""
    return _DataUnpickler(file, **kwargs).load()


@contextlib.contextmanager
def trusted_loading():
    """Restricted unpickling for DCP metadata and ``weights_only`` for every torch.load."""
    from torch.distributed.checkpoint import filesystem

    from oumi_megatron import patches

    patches.check("trusted-loading")
    restricted = types.SimpleNamespace(**vars(pickle))
    restricted.load = data_pickle_load
    restricted.loads = lambda data, **kw: data_pickle_load(io.BytesIO(data), **kw)
    original_pickle, original_load = filesystem.pickle, torch.load

    @functools.wraps(original_load)
    def weights_only_load(*args, **kwargs):
        kwargs["weights_only"] = True
        return original_load(*args, **kwargs)

    filesystem.pickle, torch.load = restricted, weights_only_load
    _DataUnpickler.refusals.clear()
    try:
        yield
    except BaseException as error:  # DCP's CheckpointException is a BaseException
        if isinstance(error, UntrustedCheckpointError):
            raise
        if _DataUnpickler.refusals:
            raise _DataUnpickler.refusals[0] from error  # DCP reports "metadata is None"
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(error))
        if found:  # a byte entry, refused by torch.load(weights_only=True)
            raise UntrustedCheckpointError(
                f"a checkpoint entry asks for {found.group(1)}, which is not checkpoint data: "
                f"refusing to load it (a checkpoint directory from an untrusted source?)"
            ) from error
        raise
    finally:
        filesystem.pickle, torch.load = original_pickle, original_load
        _DataUnpickler.refusals.clear()

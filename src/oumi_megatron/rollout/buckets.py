"""Size-bounded weight buckets and their flat-buffer packing (names, shapes, dtypes, offsets).

A bucket travels as one contiguous ``uint8`` buffer plus a small JSON-able :class:`BucketMeta`,
so a transport moves one tensor per bucket instead of one per parameter.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch

NamedTensor = tuple[str, torch.Tensor]
# Offsets are multiples of this so every slice can be re-viewed as its dtype (the widest
# element, complex128, is 16 bytes) and GPU copies stay aligned.
ALIGNMENT = 16
DEFAULT_BUCKET_BYTES = 512 * 1024 * 1024


def aligned(nbytes: int) -> int:
    return (nbytes + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT


def tensor_nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def bucketize(named_tensors: Iterable[NamedTensor], max_bytes: int) -> Iterator[list[NamedTensor]]:
    """Group ``(name, tensor)`` pairs, in order, into buckets whose packed size <= max_bytes.

    Streaming: only the current bucket is held, so tensors produced lazily (gathered from
    model-parallel ranks, converted to HF names) are never all materialised at once. A tensor
    larger than ``max_bytes`` on its own gets a bucket of its own.
    """
    if max_bytes <= 0:
        raise ValueError(f"max_bytes must be positive, got {max_bytes}")
    bucket: list[NamedTensor] = []
    size = 0
    for name, tensor in named_tensors:
        nbytes = aligned(tensor_nbytes(tensor))
        if bucket and size + nbytes > max_bytes:
            yield bucket
            bucket, size = [], 0
        bucket.append((name, tensor))
        size += nbytes
    if bucket:
        yield bucket


_DTYPES = {
    str(dtype).removeprefix("torch."): dtype
    for dtype in (
        torch.float64,
        torch.float32,
        torch.float16,
        torch.bfloat16,
        torch.float8_e4m3fn,
        torch.float8_e5m2,
        torch.int64,
        torch.int32,
        torch.int16,
        torch.int8,
        torch.uint8,
        torch.bool,
        torch.complex64,
        torch.complex128,
    )
}


def dtype_name(dtype: torch.dtype) -> str:
    name = str(dtype).removeprefix("torch.")
    if name not in _DTYPES:
        raise TypeError(f"dtype {dtype} cannot be sent as a weight")
    return name


@dataclass(frozen=True)
class TensorMeta:
    name: str
    shape: tuple[int, ...]
    dtype: str
    offset: int  # bytes from the start of the bucket buffer

    @property
    def nbytes(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count * torch.empty((), dtype=_DTYPES[self.dtype]).element_size()


@dataclass(frozen=True)
class BucketMeta:
    tensors: tuple[TensorMeta, ...]
    total_bytes: int

    def to_bytes(self) -> bytes:
        rows = [[t.name, list(t.shape), t.dtype, t.offset] for t in self.tensors]
        return json.dumps({"tensors": rows, "total_bytes": self.total_bytes}).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> BucketMeta:
        raw = json.loads(data.decode())
        tensors = tuple(TensorMeta(n, tuple(s), d, o) for n, s, d, o in raw["tensors"])
        return cls(tensors=tensors, total_bytes=int(raw["total_bytes"]))


def bucket_meta(bucket: list[NamedTensor]) -> BucketMeta:
    metas, offset = [], 0
    for name, tensor in bucket:
        metas.append(TensorMeta(name, tuple(tensor.shape), dtype_name(tensor.dtype), offset))
        offset += aligned(tensor_nbytes(tensor))
    return BucketMeta(tensors=tuple(metas), total_bytes=offset)


def pack_bucket(
    bucket: list[NamedTensor], device: torch.device | str | None = None
) -> tuple[torch.Tensor, BucketMeta]:
    """Copy a bucket into one flat uint8 buffer (on ``device``, default the first tensor's)."""
    meta = bucket_meta(bucket)
    device = torch.device(device) if device is not None else bucket[0][1].device
    flat = torch.empty(meta.total_bytes, dtype=torch.uint8, device=device)
    for tensor_meta, (_, tensor) in zip(meta.tensors, bucket, strict=True):
        if tensor_meta.nbytes == 0:
            continue
        raw = tensor.detach().contiguous().reshape(-1).view(torch.uint8)
        flat[tensor_meta.offset : tensor_meta.offset + tensor_meta.nbytes].copy_(raw)
    return flat, meta


def unpack_bucket(flat: torch.Tensor, meta: BucketMeta) -> list[NamedTensor]:
    """Views into ``flat`` (no copy): valid only while ``flat`` is alive and unchanged."""
    out = []
    for t in meta.tensors:
        raw = flat[t.offset : t.offset + t.nbytes]
        out.append((t.name, raw.view(_DTYPES[t.dtype]).view(t.shape)))
    return out

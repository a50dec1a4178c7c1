"""bucketize / pack / unpack: byte bound, order, content, dtypes, streaming."""

from __future__ import annotations

import pytest
import torch

from oumi_megatron.rollout.buckets import (
    ALIGNMENT,
    BucketMeta,
    aligned,
    bucket_meta,
    bucketize,
    pack_bucket,
    unpack_bucket,
)


def _tensors(count: int = 40) -> list[tuple[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    out = []
    for i in range(count):
        shape = (int(torch.randint(1, 40, (1,), generator=gen)), 3)
        out.append((f"layer.{i}.weight", torch.randn(shape, generator=gen)))
    return out


@pytest.mark.parametrize("max_bytes", [64, 500, 1024, 4096, 10**9])
def test_buckets_respect_bound_and_preserve_order(max_bytes):
    named = _tensors()
    buckets = list(bucketize(iter(named), max_bytes))
    flat = [pair for bucket in buckets for pair in bucket]
    assert [n for n, _ in flat] == [n for n, _ in named]
    assert all(a is b for (_, a), (_, b) in zip(flat, named, strict=True))
    for bucket in buckets:
        assert bucket
        if len(bucket) > 1:  # only a lone oversized tensor may exceed the bound
            assert bucket_meta(bucket).total_bytes <= max_bytes
    # Greedy packing: no bucket could have taken the next bucket's first tensor.
    for bucket, following in zip(buckets, buckets[1:], strict=False):
        first = following[0][1]
        size = bucket_meta(bucket).total_bytes + aligned(first.numel() * first.element_size())
        assert size > max_bytes


def test_oversized_tensor_gets_its_own_bucket():
    named = [("a", torch.zeros(4)), ("big", torch.zeros(1000)), ("b", torch.zeros(4))]
    assert [[n for n, _ in b] for b in bucketize(named, 64)] == [["a"], ["big"], ["b"]]


def test_bucketize_streams():
    consumed = []

    def produce():
        for i in range(10):
            consumed.append(i)
            yield f"t{i}", torch.zeros(8)  # 32 bytes each

    it = bucketize(produce(), 64)
    first = next(it)
    assert [n for n, _ in first] == ["t0", "t1"]
    assert consumed == [0, 1, 2]  # one tensor of look-ahead, never the whole stream


def test_bucketize_rejects_non_positive_bound():
    with pytest.raises(ValueError):
        list(bucketize([("a", torch.zeros(1))], 0))


def test_pack_unpack_round_trip_is_bit_identical():
    bucket = [
        ("f32", torch.randn(3, 5)),
        ("bf16", torch.randn(7).bfloat16()),
        ("f16", torch.randn(2, 2).half()),
        ("i64", torch.arange(5)),
        ("flag", torch.tensor(True)),
        ("scalar", torch.tensor(3.5)),
        ("empty", torch.zeros(0, 4)),
        ("transposed", torch.randn(4, 6).t()),
        ("u8", torch.randint(0, 255, (9,), dtype=torch.uint8)),
    ]
    flat, meta = pack_bucket(bucket)
    assert flat.dtype == torch.uint8 and flat.numel() == meta.total_bytes
    assert all(t.offset % ALIGNMENT == 0 for t in meta.tensors)
    decoded = BucketMeta.from_bytes(meta.to_bytes())
    assert decoded == meta
    for (name, src), (name2, dst) in zip(bucket, unpack_bucket(flat, decoded), strict=True):
        assert name == name2 and dst.dtype == src.dtype and dst.shape == src.shape
        assert torch.equal(src, dst)
        assert dst.untyped_storage().data_ptr() == flat.untyped_storage().data_ptr()  # views

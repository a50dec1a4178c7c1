"""Context-parallel token layout: chunks r and 2C-1-r of every sequence, gathered back in order,
and micro-batch shards that keep per-sequence reductions and whole-sequence token counts."""

from __future__ import annotations

import pytest
import torch

from oumi_megatron.data.context_parallel import (
    attention_layout,
    gather_order,
    local_positions,
    shard_for_context_parallel,
)
from oumi_megatron.data.packing import pack_bin, pad_batch


def test_each_rank_holds_an_early_and_a_late_chunk():
    # One 8-token sequence, CP 2: chunks of 2; rank 0 holds chunks 0 and 3, rank 1 chunks 1, 2.
    assert local_positions([8], 0, 2).tolist() == [0, 1, 6, 7]
    assert local_positions([8], 1, 2).tolist() == [2, 3, 4, 5]
    # Two segments: offsets carry over.
    assert local_positions([4, 8], 1, 2).tolist() == [1, 2, 4 + 2, 4 + 3, 4 + 4, 4 + 5]


def test_gather_order_restores_the_sequence():
    segments = [8, 16, 24]
    gathered = torch.cat([local_positions(segments, r, 4) for r in range(4)])
    assert torch.equal(gathered[gather_order(segments, 4)], torch.arange(48))


def test_segment_not_divisible_by_chunks_is_refused():
    with pytest.raises(ValueError, match=r"multiple of 2 × context_parallel_size \(4\)"):
        local_positions([6], 0, 2)


def test_attention_layout_of_a_rank():
    # Segments of 4 and 8 tokens, CP 2, rank 1: positions 1, 2 of the first and 2..5 of the
    # second (global 6..9).
    layout = attention_layout([4, 8], 1, 2)
    assert layout["query"].tolist() == [1, 2, 6, 7, 8, 9]
    assert layout["rope"].tolist() == [1, 2, 2, 3, 4, 5]
    assert layout["segment"].tolist() == [0] * 4 + [1] * 8
    assert torch.equal(layout["order"], gather_order([4, 8], 2))


def test_packed_shards_carry_their_layout_to_the_device_batch():
    ids, masks = _sequences()
    batch = pack_bin([0, 1, 2], ids, masks, pad_sequences_to_multiple=4, pad_to_multiple=4)
    segments = (batch.cu_seqlens_padded[1:] - batch.cu_seqlens_padded[:-1]).tolist()
    shard = shard_for_context_parallel(batch, 1, 2)
    expected = attention_layout(segments, 1, 2)
    for layout in (shard.cp_layout, shard.to("cpu").cp_layout):
        assert layout.keys() == expected.keys()
        assert all(torch.equal(layout[k], expected[k]) for k in expected)
    assert shard.packed_seq_kwargs()["cp_layout"] is shard.cp_layout
    assert shard_for_context_parallel(pad_batch([0, 1], ids, masks, pad_to_multiple=4), 0, 2
                                      ).cp_layout is None  # fmt: skip


def _sequences():
    ids = [torch.arange(1, 6), torch.arange(10, 13), torch.arange(20, 27)]
    masks = [
        torch.tensor([0, 0, 1, 1, 1.0]),
        torch.tensor([0, 1, 1.0]),
        torch.tensor([0, 0, 0, 1, 1, 1, 1.0]),
    ]
    return ids, masks


@pytest.mark.parametrize("packed", [True, False])
def test_shards_partition_the_batch(packed):
    ids, masks = _sequences()
    aux = {"x": [torch.rand(len(i)) for i in ids]}
    if packed:
        batch = pack_bin([0, 1, 2], ids, masks, aux, pad_sequences_to_multiple=4, pad_to_multiple=4)
    else:
        batch = pad_batch([0, 1, 2], ids, masks, aux, pad_to_multiple=4)
    shards = [shard_for_context_parallel(batch, r, 2) for r in range(2)]
    for name in ("input_ids", "labels", "loss_mask"):
        local = torch.cat([getattr(s, name) for s in shards], dim=1)
        segments = (
            (batch.cu_seqlens_padded[1:] - batch.cu_seqlens_padded[:-1]).tolist()
            if packed
            else [batch.input_ids.shape[1]]
        )
        restored = local.index_select(1, gather_order(segments, 2))
        assert torch.equal(restored, getattr(batch, name)), name
    # Every loss token is held by exactly one rank; each sequence keeps its whole count.
    assert sum(float(s.loss_mask.sum()) for s in shards) == float(batch.loss_mask.sum())
    for shard in shards:
        assert shard.seq_targets == [3, 2, 4]
        # Each sequence's local tokens are one contiguous span that per-sequence rows read.
        rows = shard.to_rows(shard.loss_mask)
        assert rows.shape[0] == 3
    per_seq = sum(s.to_rows(s.loss_mask).sum(dim=1) for s in shards)
    assert per_seq.tolist() == [3, 2, 4]


def test_cp1_is_the_batch_itself():
    ids, masks = _sequences()
    batch = pack_bin([0, 1], ids, masks)
    assert shard_for_context_parallel(batch, 0, 1) is batch


@pytest.mark.cpu_only
def test_cpu_rope_chunks_are_the_ranks_chunks():
    from oumi_megatron.parallel.cpu_compat import cp_rank_pos_emb

    class Group:
        def __init__(self, rank, size):
            self._rank, self._size = rank, size

        def rank(self):
            return self._rank

        def size(self):
            return self._size

    freqs = torch.arange(16.0).reshape(16, 1, 1, 1)  # [seq, 1, 1, dim] as Megatron's RoPE
    for rank in range(2):
        mine = cp_rank_pos_emb(freqs, 0, Group(rank, 2)).flatten()
        assert mine.tolist() == local_positions([16], rank, 2).float().tolist()

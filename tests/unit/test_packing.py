"""Sequence packing: FFD, DP balancing, packed/padded tensors, unpack round trips."""

from __future__ import annotations

import math
import random

import pytest
import torch
import torch.nn.functional as F

from oumi_megatron.data.packing import (
    PackedBatch,
    PaddedBatch,
    first_fit_decreasing,
    pack_bin,
    pad_batch,
    plan_microbatches,
)

# --------------------------------------------------------------------------- planning


def _skewed_lengths(n: int, seed: int, hi: int = 4096) -> list[int]:
    rng = random.Random(seed)
    return [min(hi, max(8, int(rng.lognormvariate(6.0, 1.0)))) for _ in range(n)]


def _check_plan(plan, lengths: list[int], max_tokens: int, dp: int, multiple: int = 1) -> None:
    assert len(plan.bins) == dp
    assert {len(rank) for rank in plan.bins} == {plan.num_microbatches}
    seen = sorted(i for rank in plan.bins for b in rank for i in b)
    assert seen == list(range(len(lengths)))  # Every sequence exactly once.
    for rank in plan.bins:
        for b in rank:
            assert sum(-(-lengths[i] // multiple) * multiple for i in b) <= max_tokens
    assert plan.stats.tokens_per_rank == [
        sum(lengths[i] for b in rank for i in b) for rank in plan.bins
    ]


def test_ffd_hand_example() -> None:
    # Longest first: 6 -> bin0, 5 -> bin1, 4 -> bin2, 3 -> bin1 (full), 2 -> bin0, 1 -> bin2.
    assert first_fit_decreasing([5, 3, 4, 2, 6, 1], 8) == [[4, 3], [0, 1], [2, 5]]


def test_ffd_ties_break_by_index_and_exact_fit() -> None:
    assert first_fit_decreasing([2, 2, 2, 2], 4) == [[0, 1], [2, 3]]
    assert first_fit_decreasing([3, 1, 3, 1], 4) == [[0, 1], [2, 3]]
    assert first_fit_decreasing([], 4) == []


def test_too_long_sequence_names_sample_and_fix() -> None:
    with pytest.raises(ValueError, match=r"sequence 2 has 9 tokens.*max_tokens=8") as err:
        first_fit_decreasing([1, 8, 9], 8)
    assert "raise megatron.max_tokens_per_microbatch" in str(err.value)
    assert "at least 9" in str(err.value)
    with pytest.raises(ValueError, match=r"sequence 0 has 7 tokens \(8 after padding.*4\)"):
        plan_microbatches([7], 7, 1, pad_sequences_to_multiple=4)
    with pytest.raises(ValueError, match="sequence 1 has length 0"):
        first_fit_decreasing([3, 0], 8)


@pytest.mark.parametrize("dp", [1, 2, 3, 8])
@pytest.mark.parametrize("seed", [0, 1])
def test_plan_invariants(dp: int, seed: int) -> None:
    lengths = _skewed_lengths(97, seed)
    plan = plan_microbatches(lengths, 4096, dp)
    _check_plan(plan, lengths, 4096, dp)
    # The fewest micro-batches per rank that first-fit-decreasing allows.
    assert plan.num_microbatches == math.ceil(len(first_fit_decreasing(lengths, 4096)) / dp)


def test_balance_on_skewed_lengths() -> None:
    lengths = _skewed_lengths(512, seed=3)
    assert max(lengths) / min(lengths) > 100  # Really skewed.
    plan = plan_microbatches(lengths, 8192, 8)
    _check_plan(plan, lengths, 8192, 8)
    tokens = plan.stats.tokens_per_rank
    assert max(tokens) / min(tokens) < 1.01  # Measured: 1.0001.
    assert plan.stats.imbalance < 1.01
    assert plan.stats.efficiency > 0.95  # Measured: 0.977.
    # Naive baseline (FFD bins dealt round-robin) is much worse on the same data.
    ffd = first_fit_decreasing(lengths, 8192)
    naive = [sum(lengths[i] for b in ffd[r::8] for i in b) for r in range(8)]
    assert max(naive) / min(naive) > max(tokens) / min(tokens)


def test_few_sequences_give_empty_microbatches() -> None:
    plan = plan_microbatches([5, 3, 2], 8, 4)
    assert plan.num_microbatches == 1
    assert sorted(map(sorted, (b for rank in plan.bins for b in rank))) == [[], [0], [1], [2]]
    assert plan.stats.num_empty_bins == 1
    assert plan.stats.tokens_per_rank == [5, 3, 2, 0]
    assert plan.stats.efficiency == 10 / 32
    m = plan.stats.as_metrics()
    assert m["packing/num_microbatches"] == 1.0 and m["packing/empty_microbatches"] == 1.0
    empty = plan_microbatches([], 8, 2)
    assert empty.bins == [[[]], [[]]] and empty.stats.imbalance == 1.0


def test_microbatch_multiple_and_spread() -> None:
    # Two FFD bins, but an interleaved schedule wants a multiple of 4 micro-batches.
    plan = plan_microbatches([4, 4, 4, 4], 8, 1, microbatch_multiple=4)
    assert plan.num_microbatches == 4
    assert plan.for_rank(0) == [[0], [1], [2], [3]]  # Spread evenly, no empty micro-batch.


def test_spread_overflow_falls_back_to_ffd_bins() -> None:
    # Longest-first into 2 lightest bins fails (5,4 | 5,3 then 3 overflows): FFD bins are used.
    plan = plan_microbatches([5, 5, 4, 3, 3], 10, 1)
    assert plan.num_microbatches == 2
    assert sorted(map(sorted, plan.for_rank(0))) == [[0, 1], [2, 3, 4]]


def test_per_sequence_padding_counts_against_budget() -> None:
    lengths = [5, 5]  # 8 + 8 > 12 after padding to multiples of 4.
    plan = plan_microbatches(lengths, 12, 1, pad_sequences_to_multiple=4)
    assert plan.num_microbatches == 2
    _check_plan(plan, lengths, 12, 1, multiple=4)


def test_plan_is_deterministic() -> None:
    lengths = _skewed_lengths(200, seed=5)
    assert plan_microbatches(lengths, 4096, 4) == plan_microbatches(lengths, 4096, 4)


# --------------------------------------------------------------------------- tensors

IDS = [torch.tensor([10, 11, 12]), torch.tensor([20, 21])]
MASKS = [torch.tensor([0, 1, 1]), torch.tensor([0, 1])]
AUX = {
    "old_logprobs": [torch.tensor([0.0, -0.1, -0.2]), torch.tensor([0.0, -0.3])],
    "advantages": [1.5, -0.5],  # Per-sequence scalars, broadcast.
}


def test_packed_hand_example() -> None:
    b = pack_bin([0, 1], IDS, MASKS, AUX, pad_to_multiple=8)
    assert isinstance(b, PackedBatch)
    assert b.input_ids.tolist() == [[10, 11, 12, 20, 21, 0, 0, 0]]
    assert b.labels.tolist() == [[11, 12, 0, 21, 0, 0, 0, 0]]
    assert b.loss_mask.tolist() == [[1, 1, 0, 1, 0, 0, 0, 0]]
    assert b.position_ids.tolist() == [[0, 1, 2, 0, 1, 0, 1, 2]]
    assert b.cu_seqlens.dtype == torch.int32
    assert b.cu_seqlens.tolist() == b.cu_seqlens_padded.tolist() == [0, 3, 5, 8]
    assert b.max_seqlen == 3 and b.num_tokens == 5 and not b.is_empty
    torch.testing.assert_close(
        b.aux["old_logprobs"], torch.tensor([[-0.1, -0.2, 0, -0.3, 0, 0, 0, 0]])
    )
    torch.testing.assert_close(b.aux["advantages"], torch.tensor([[1.5, 1.5, 0, -0.5, 0, 0, 0, 0]]))
    kwargs = b.packed_seq_kwargs()
    assert kwargs["qkv_format"] == "thd" and kwargs["max_seqlen_q"] == 3
    assert kwargs["cu_seqlens_q"] is b.cu_seqlens


def test_packed_bin_order_and_no_row_padding() -> None:
    b = pack_bin([1, 0], IDS, MASKS)
    assert b.input_ids.tolist() == [[20, 21, 10, 11, 12]]
    assert b.cu_seqlens.tolist() == [0, 2, 5] and b.sequence_indices == [1, 0]
    assert b.position_ids.tolist() == [[0, 1, 0, 1, 2]]


def test_packed_per_sequence_padding() -> None:
    b = pack_bin([0, 1], IDS, MASKS, pad_to_multiple=8, pad_sequences_to_multiple=2)
    assert b.input_ids.tolist() == [[10, 11, 12, 0, 20, 21, 0, 0]]
    assert b.loss_mask.tolist() == [[1, 1, 0, 0, 1, 0, 0, 0]]
    assert b.position_ids.tolist() == [[0, 1, 2, 3, 0, 1, 0, 1]]
    assert b.cu_seqlens_padded.tolist() == [0, 4, 6, 8]
    assert b.cu_seqlens.tolist() == [0, 3, 5, 7]  # Real lengths (Transformer Engine).
    assert b.max_seqlen == 4 and b.seq_starts == [0, 4]


def test_empty_bin_is_a_padding_only_row() -> None:
    b = pack_bin([], IDS, MASKS, AUX, pad_to_multiple=4)
    assert b.is_empty and b.num_tokens == 0
    assert b.input_ids.tolist() == [[0, 0, 0, 0]] and b.loss_mask.sum() == 0
    assert b.cu_seqlens.tolist() == [0, 4] and b.aux["advantages"].shape == (1, 4)
    assert b.unpack(b.loss_mask) == [] and b.to_rows(b.loss_mask).shape == (0, 0)
    p = pad_batch([], IDS)
    assert p.is_empty and p.input_ids.shape == (1, 1)


def test_padded_hand_example() -> None:
    b = pad_batch([0, 1], IDS, MASKS, AUX, pad_to_multiple=4)
    assert isinstance(b, PaddedBatch) and not isinstance(b, PackedBatch)
    assert b.input_ids.tolist() == [[10, 11, 12, 0], [20, 21, 0, 0]]
    assert b.labels.tolist() == [[11, 12, 0, 0], [21, 0, 0, 0]]
    assert b.loss_mask.tolist() == [[1, 1, 0, 0], [1, 0, 0, 0]]
    assert b.position_ids.tolist() == [[0, 1, 2, 3], [0, 1, 2, 3]]
    assert b.max_seqlen == 4 and b.seq_starts == [0, 4]
    torch.testing.assert_close(
        b.aux["advantages"], torch.tensor([[1.5, 1.5, 0, 0], [-0.5, 0, 0, 0]])
    )


def test_default_mask_and_shape_errors() -> None:
    b = pack_bin([0, 1], IDS)
    assert b.loss_mask.tolist() == [[1, 1, 0, 1, 0]]  # Every target counts.
    with pytest.raises(ValueError, match=r"loss_mask\[1\] has shape \(3,\), expected \(2,\)"):
        pack_bin([1], IDS, [MASKS[0], MASKS[0]])
    with pytest.raises(ValueError, match=r"old_logprobs\[0\]"):
        pad_batch([0], IDS, aux={"old_logprobs": [torch.zeros(2)]})
    with pytest.raises(ValueError, match="sequence 0 is empty"):
        pack_bin([0], [torch.tensor([], dtype=torch.long)])
    with pytest.raises(ValueError, match="expected"):
        b.unpack(torch.zeros(1, 4))


def _random_sequences(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 12, (n,), generator=g).tolist()
    ids = [torch.randint(1, 32, (k,), generator=g) for k in lengths]
    masks = [(torch.rand(k, generator=g) > 0.3).float() for k in lengths]
    aux = {"x": [torch.cat([torch.zeros(1), torch.randn(k - 1, generator=g)]) for k in lengths]}
    return ids, masks, aux


@pytest.mark.parametrize("builder", ["packed", "packed_cp", "padded"])
def test_unpack_of_pack_is_identity(builder: str) -> None:
    ids, masks, aux = _random_sequences(7, seed=1)
    order = [3, 0, 6, 2, 5, 1, 4]
    if builder == "padded":
        b = pad_batch(order, ids, masks, aux, pad_to_multiple=8)
    else:
        seq_mult = 4 if builder == "packed_cp" else 1
        b = pack_bin(order, ids, masks, aux, pad_to_multiple=8, pad_sequences_to_multiple=seq_mult)
    for got, i in zip(b.unpack(b.aux["x"]), order, strict=True):
        torch.testing.assert_close(got, aux["x"][i])  # Element 0 is the fill (0) by design.
    for got, i in zip(b.unpack(b.loss_mask), order, strict=True):
        torch.testing.assert_close(got[1:], masks[i][1:])
    for got, i in zip(b.unpack(b.labels, fill=-1), order, strict=True):
        assert got[1:].tolist() == ids[i][1:].tolist()  # labels are the next tokens.
    trailing = torch.stack([b.aux["x"], 2 * b.aux["x"]], dim=-1)  # [.., T, 2] also works.
    assert b.unpack(trailing)[0].shape == (len(ids[order[0]]), 2)


def test_to_rows_matches_padded_layout_and_keeps_gradients() -> None:
    ids, masks, aux = _random_sequences(5, seed=2)
    order = [4, 2, 0, 1, 3]
    packed = pack_bin(order, ids, masks, aux, pad_to_multiple=16, pad_sequences_to_multiple=2)
    padded = pad_batch(order, ids, masks, aux)
    assert torch.equal(packed.to_rows(packed.loss_mask), padded.loss_mask)
    assert torch.equal(packed.to_rows(packed.labels), padded.labels)
    assert torch.equal(padded.to_rows(padded.aux["x"]), padded.aux["x"])
    values = packed.aux["x"].clone().requires_grad_()
    packed.to_rows(values, fill=float("nan")).nan_to_num().sum().backward()
    assert torch.equal(values.grad, (packed.position_ids >= 0).float() * _real(packed))


def _real(b: PackedBatch) -> torch.Tensor:
    out = torch.zeros_like(b.loss_mask)
    for s, n in zip(b.seq_starts, b.seq_lengths, strict=True):
        out[0, s : s + n] = 1
    return out


def _block_causal(cu_seqlens: torch.Tensor, total: int) -> torch.Tensor:
    pos = torch.arange(total)
    doc = torch.bucketize(pos, cu_seqlens[1:], right=True)
    return (doc[:, None] == doc[None, :]) & (pos[:, None] >= pos[None, :])


def test_packed_and_padded_give_the_same_logprobs_and_loss() -> None:
    """A toy causal LM gives identical per-token log-probs and loss on both layouts."""
    from oumi_megatron.algorithms import LossNormalizer, aggregate_loss

    torch.manual_seed(0)
    vocab, dim = 32, 16
    emb, pos_emb = torch.nn.Embedding(vocab, dim), torch.nn.Embedding(32, dim)
    qkv, head = torch.nn.Linear(dim, 3 * dim), torch.nn.Linear(dim, vocab)

    def logprobs(ids, positions, allowed, labels):  # ids [R, T], allowed [R, T, T]
        x = emb(ids) + pos_emb(positions)
        q, k, v = qkv(x).chunk(3, dim=-1)
        h = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        return head(h + x).log_softmax(-1).gather(-1, labels[..., None])[..., 0]

    ids, masks, _ = _random_sequences(6, seed=3)
    order = list(range(6))
    packed = pack_bin(order, ids, masks, pad_to_multiple=16, pad_sequences_to_multiple=4)
    padded = pad_batch(order, ids, masks, pad_to_multiple=4)
    total = packed.input_ids.shape[1]
    lp_packed = logprobs(
        packed.input_ids, packed.position_ids,
        _block_causal(packed.cu_seqlens_padded, total)[None], packed.labels,
    )  # fmt: skip
    width = padded.input_ids.shape[1]
    causal = torch.ones(width, width, dtype=torch.bool).tril().expand(len(order), width, width)
    lp_padded = logprobs(padded.input_ids, padded.position_ids, causal, padded.labels)
    for a, b in zip(packed.unpack(lp_packed), padded.unpack(lp_padded), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    norm = LossNormalizer.from_global_batch(padded.loss_mask, "seq-mean-token-mean")
    loss_packed = aggregate_loss(packed.to_rows(-lp_packed), packed.to_rows(packed.loss_mask), norm)
    loss_padded = aggregate_loss(-lp_padded, padded.loss_mask, norm)
    torch.testing.assert_close(loss_packed, loss_padded)


def test_plan_then_pack_fits_the_budget() -> None:
    ids, masks, aux = _random_sequences(40, seed=4)
    lengths = [len(x) for x in ids]
    plan = plan_microbatches(lengths, 32, 3, pad_sequences_to_multiple=2)
    for rank in plan.bins:
        for b in rank:
            batch = pack_bin(b, ids, masks, aux, pad_to_multiple=8, pad_sequences_to_multiple=2)
            assert batch.input_ids.shape[1] <= 32 and batch.input_ids.shape[1] % 8 == 0
            assert batch.num_tokens == sum(lengths[i] for i in b)


def test_to_device_moves_every_tensor() -> None:
    b = pack_bin([0, 1], IDS, MASKS, AUX).to("cpu")
    assert isinstance(b, PackedBatch) and b.cu_seqlens.tolist() == [0, 3, 5]
    assert b.aux["advantages"].device.type == "cpu"


def test_a_batch_already_on_the_device_is_not_copied_again() -> None:
    """The policy moves every batch it runs; one already there (gather built) is kept as it is."""
    b = pack_bin([0, 1], IDS, MASKS, AUX).to("cpu")
    assert b.to("cpu") is b and b.to(torch.device("cpu")) is b
    fresh = pack_bin([0, 1], IDS, MASKS, AUX)
    assert "_row_gather" not in vars(fresh) and fresh.to("cpu") is not fresh

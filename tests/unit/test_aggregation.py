"""Loss aggregation modes (verl's agg_loss): hand values, normalisers, split invariance."""

import pytest
import torch
from _loss_helpers import random_batch

from oumi_megatron.algorithms import (
    AGGREGATION_MODES,
    AggregationMode,
    LossNormalizer,
    aggregate_loss,
    batch_counts,
)

MASK = torch.tensor([[1, 1, 1], [1, 0, 0]])
LOSS = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])


@pytest.mark.parametrize(
    ("mode", "scale", "expected"),
    [
        ("token-mean", None, 2.5),  # (1 + 2 + 3 + 4) / 4
        ("token-sum", None, 10.0),  # 1 + 2 + 3 + 4
        ("seq-mean-token-sum", None, 5.0),  # (6 + 4) / 2
        ("seq-mean-token-mean", None, 3.0),  # (6 / 3 + 4 / 1) / 2
        ("seq-mean-token-sum-norm", 3, 10.0 / 6.0),  # (6 / 3 + 4 / 3) / 2
        ("seq-mean-token-sum-norm", 4, 1.25),  # (6 / 4 + 4 / 4) / 2
    ],
)
def test_aggregation_hand_values(mode: AggregationMode, scale: int | None, expected: float) -> None:
    norm = LossNormalizer.from_global_batch(MASK, mode, scale)
    assert (norm.num_tokens, norm.num_seqs) == (4, 2)
    torch.testing.assert_close(aggregate_loss(LOSS, MASK, norm), torch.tensor(expected))
    # A micro-batch's all-padding row and NaN / inf in masked-out positions change nothing.
    mask3 = torch.cat([MASK, torch.zeros(1, 3, dtype=MASK.dtype)])
    loss3 = torch.cat([LOSS, torch.full((1, 3), float("nan"))])
    loss3[1, 2] = float("inf")
    torch.testing.assert_close(aggregate_loss(loss3, mask3, norm), torch.tensor(expected))


def test_a_fully_masked_sequence_counts_in_the_sequence_normaliser() -> None:
    # verl counts every sequence of the mini-batch (global_batch_size), also one whose tokens
    # were all masked out (overlong filtering): S = 3 here, N = 4.
    mask = torch.cat([MASK, torch.zeros(1, 3, dtype=MASK.dtype)])
    loss = torch.cat([LOSS, torch.ones(1, 3)])
    expected = {"token-mean": 2.5, "token-sum": 10.0, "seq-mean-token-sum": 10 / 3,
                "seq-mean-token-mean": 6 / 3, "seq-mean-token-sum-norm": 10 / 9}  # fmt: skip
    for mode, value in expected.items():
        norm = LossNormalizer.from_global_batch(mask, mode, 3)  # type: ignore[arg-type]
        assert (norm.num_tokens, norm.num_seqs) == (4, 3)
        torch.testing.assert_close(aggregate_loss(loss, mask, norm), torch.tensor(value))


def test_normalizer_validation() -> None:
    with pytest.raises(ValueError, match="scale_factor"):
        LossNormalizer.from_counts("seq-mean-token-sum-norm", 4, 2)
    with pytest.raises(ValueError, match="scale_factor"):
        LossNormalizer.from_counts("seq-mean-token-sum-norm", 4, 2, 0.0)
    with pytest.raises(ValueError, match="unknown aggregation"):
        LossNormalizer.from_counts("sum", 4, 2)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        LossNormalizer.from_counts("token-mean", -1, 2)
    # Non-empty rows of a micro-batch mask.
    assert batch_counts(torch.cat([MASK, torch.zeros(1, 3, dtype=MASK.dtype)])).tolist() == [4, 2]


@pytest.mark.parametrize("mode", AGGREGATION_MODES)
@pytest.mark.parametrize("chunks", [1, 2, 4])
def test_aggregation_is_split_invariant(mode: AggregationMode, chunks: int) -> None:
    loss, mask = random_batch(1)
    norm = LossNormalizer.from_global_batch(mask, mode, scale_factor=6)
    full = aggregate_loss(loss, mask, norm)
    parts = sum(
        aggregate_loss(lc, mc, norm)
        for lc, mc in zip(loss.chunk(chunks), mask.chunk(chunks), strict=True)
    )
    torch.testing.assert_close(parts, full, atol=1e-12, rtol=0)
    if chunks > 1 and mode == "token-mean":
        # Control: per-micro-batch token counts (the naive way) give a different answer here.
        naive = sum(
            aggregate_loss(lc, mc, LossNormalizer.from_global_batch(mc, mode)) / chunks
            for lc, mc in zip(loss.chunk(chunks), mask.chunk(chunks), strict=True)
        )
        assert abs(float(naive) - float(full)) > 1e-3


@pytest.mark.parametrize("mode", AGGREGATION_MODES)
def test_normalizer_from_counts_reduced_over_ranks(mode: AggregationMode) -> None:
    loss, mask = random_batch(2)
    full_norm = LossNormalizer.from_global_batch(mask, mode, scale_factor=6)
    # 2 "DP ranks" x 2 micro-batches; token and sequence counts summed as an all-reduce would.
    ranks = [(loss[:4], mask[:4]), (loss[4:], mask[4:])]
    tokens = sum(int(m.sum()) for _, m in ranks)
    norm = LossNormalizer.from_counts(mode, tokens, sum(len(m) for _, m in ranks), 6)
    assert norm == full_norm
    total = sum(
        aggregate_loss(lc, mc, norm)
        for lr, mr in ranks
        for lc, mc in zip(lr.chunk(2), mr.chunk(2), strict=True)
    )
    torch.testing.assert_close(total, aggregate_loss(loss, mask, full_norm), atol=1e-12, rtol=0)


def test_seq_mean_token_mean_with_sequences_split_along_time() -> None:
    # Context parallelism splits a sequence over calls; full lengths keep the result exact.
    loss, mask = random_batch(3)
    norm = LossNormalizer.from_global_batch(mask, "seq-mean-token-mean")
    n = mask.sum(-1)
    halves = sum(
        aggregate_loss(lc, mc, norm, seq_num_tokens=n)
        for lc, mc in zip(loss.chunk(2, dim=1), mask.chunk(2, dim=1), strict=True)
    )
    torch.testing.assert_close(halves, aggregate_loss(loss, mask, norm), atol=1e-12, rtol=0)

"""Micro-batches under sequence parallelism: each CP rank's tokens split evenly over the TP
ranks (rows, or a packed bin's total, padded to a multiple of CP × TP); the layout's name and
its SP size."""

from __future__ import annotations

import pytest

from oumi_megatron.parallel.layout import ParallelLayout
from oumi_megatron.training.step_batches import (
    BatchingSettings,
    StepSequences,
    build_microbatches,
)


def _sequences() -> StepSequences:
    prompts = [[5, 6, 7], [8, 9], [4, 4, 4, 4]]
    completions = [[1, 2], [3, 3, 3], [2]]
    logprobs = [[-0.5] * len(c) for c in completions]
    return StepSequences.from_rollouts(prompts, completions, logprobs, [0.5, -0.5, 1.0])


# Every sequence is 5 tokens: a padded row is 5 wide; a packed bin holds 3 × 5 = 15, or
# 3 × 8 = 24 with CP2 (each sequence rounded to 2·CP = 4 first). Then up to the multiple.
@pytest.mark.parametrize(
    ("packing", "cp", "sp", "width"),
    [(False, 1, 1, 5), (False, 1, 4, 8), (False, 2, 2, 8), (False, 2, 4, 8),
     (True, 1, 1, 15), (True, 1, 4, 16), (True, 2, 2, 24), (True, 2, 4, 24), (True, 2, 8, 32)],
)  # fmt: skip
def test_micro_batch_tokens_split_evenly(packing, cp, sp, width) -> None:
    settings = BatchingSettings(micro_batch_size=3, dp_size=1, dp_rank=0, packing=packing,
                                token_budget=64, cp_size=cp, sp_size=sp)  # fmt: skip
    (batch,), _ = build_microbatches(_sequences(), settings)
    assert batch.input_ids.shape[1] == width


def test_sp_size_and_name() -> None:
    assert ParallelLayout(tp=4, sequence_parallel=True).sp_size == 4
    assert ParallelLayout(tp=4).sp_size == 1
    assert ParallelLayout(tp=1, sequence_parallel=True).sp_size == 1  # ignored at TP 1
    assert str(ParallelLayout(tp=2, cp=2, sequence_parallel=True)) == "TP2+SP×PP1×CP2"


@pytest.mark.parametrize(("packing", "width"), [(False, 8), (True, 32)])
def test_fixed_shape_rounds_up_to_the_multiple(packing, width) -> None:
    """One shape for every micro-batch (VPP, EP's all-gather): the largest a batch can be (a
    30-token budget packed, the 5-token longest row padded) rounded up to CP × SP = 4, not a
    common multiple of the two (60 / 20)."""
    settings = BatchingSettings(micro_batch_size=3, dp_size=1, dp_rank=0, packing=packing,
                                token_budget=30, fixed_shape=True, sp_size=4)  # fmt: skip
    batches, _ = build_microbatches(_sequences(), settings)
    assert {b.input_ids.shape[1] for b in batches} == {width}

"""Uneven pipeline splits: our stage sizes equal Megatron-Core's, proposals are valid."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest

from oumi_megatron.parallel.pipeline_split import (
    PipelineSplit,
    PipelineSplitError,
    propose_split,
    stage_layers,
)


def _megatron_stage_layers(num_layers: int, pp: int, vpp: int | None, split: PipelineSplit):
    """Layers per pipeline rank as Megatron builds them (``get_num_layers_to_build`` per
    virtual stage, summed), or None where Megatron's checks reject the split."""
    from megatron.core.transformer.transformer_block import get_num_layers_to_build

    config = SimpleNamespace(
        num_layers=num_layers,
        pipeline_model_parallel_size=pp,
        virtual_pipeline_model_parallel_size=vpp,
        pipeline_model_parallel_layout=None,
        **split.megatron_fields(),
    )
    per_rank = []
    try:
        for rank in range(pp):
            stages = range(vpp) if vpp else [None]
            per_rank.append(sum(get_num_layers_to_build(config, v, rank) for v in stages))
    except AssertionError:
        return None
    return per_rank


SPLITS = [
    PipelineSplit(),
    PipelineSplit(embedding_in_split=True, loss_in_split=True),
    PipelineSplit(embedding_in_split=True),
    PipelineSplit(loss_in_split=True),
    PipelineSplit(first_stage_layers=2),
    PipelineSplit(last_stage_layers=4),
    PipelineSplit(first_stage_layers=6, last_stage_layers=6),
    PipelineSplit(first_stage_layers=7, last_stage_layers=7),
    PipelineSplit(first_stage_layers=4, last_stage_layers=4),
]


@pytest.mark.parametrize(
    ("num_layers", "pp", "vpp"),
    [(126, 16, None), (126, 16, 2), (80, 2, None), (30, 4, None), (24, 4, 4), (28, 4, 2)],
)
def test_stage_layers_match_megatron(num_layers, pp, vpp) -> None:
    compared = 0
    for split in SPLITS:
        try:
            ours = stage_layers(num_layers, pp, vpp, split)
        except PipelineSplitError:
            ours = None
        theirs = _megatron_stage_layers(num_layers, pp, vpp, split)
        if ours is not None:  # whatever we accept, Megatron builds the same way
            assert theirs == ours, (split, ours, theirs)
            assert sum(ours) == num_layers
            compared += 1
    assert compared >= 1


def test_405b_split_over_16_stages() -> None:
    with pytest.raises(PipelineSplitError, match=r"layers \(126\) must be divisible"):
        stage_layers(126, 16)
    split = propose_split(126, 16, vpp=2)
    assert split == PipelineSplit(embedding_in_split=True, loss_in_split=True)
    assert stage_layers(126, 16, 2, split) == [7] + [8] * 14 + [7]


def test_explicit_sizes_are_checked() -> None:
    with pytest.raises(PipelineSplitError, match="3 layer\\(s\\) left for the 2 middle"):
        stage_layers(10, 4, None, PipelineSplit(first_stage_layers=3, last_stage_layers=4))
    with pytest.raises(PipelineSplitError, match="not divisible by virtual"):
        stage_layers(24, 4, 4, PipelineSplit(first_stage_layers=6, last_stage_layers=6))
    with pytest.raises(PipelineSplitError, match="cannot be combined"):
        stage_layers(24, 4, None, PipelineSplit(first_stage_layers=6, loss_in_split=True))


@pytest.mark.parametrize(
    ("num_layers", "pp", "vpp"), itertools.product([24, 61, 80, 126], [3, 4, 8], [None, 2])
)
def test_proposals_are_accepted_by_megatron(num_layers, pp, vpp) -> None:
    split = propose_split(num_layers, pp, vpp)
    if split is None:
        return
    ours = stage_layers(num_layers, pp, vpp, split)
    assert _megatron_stage_layers(num_layers, pp, vpp, split) == ours

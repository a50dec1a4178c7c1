"""PromptDataLoader: same order on every rank, per-epoch reshuffle, exact resume."""

from __future__ import annotations

import json

import pytest

from oumi_megatron.data.loader import PromptDataLoader
from oumi_megatron.data.prompts import PromptExample


def _dataset(n: int) -> list[PromptExample]:
    return [PromptExample(f"s{i}", (i,), f"p{i}", None, {}) for i in range(n)]


def _ids(step) -> list[str]:
    return [e.sample_id for e in step.prompts]


def test_epochs_cover_everything_and_reshuffle() -> None:
    loader = PromptDataLoader(_dataset(10), prompts_per_step=5, seed=1)
    epoch0 = _ids(next(loader)) + _ids(next(loader))
    epoch1 = _ids(next(loader)) + _ids(next(loader))
    assert sorted(epoch0) == sorted(epoch1) == sorted(f"s{i}" for i in range(10))
    assert epoch0 != epoch1 and loader.epoch == 2
    assert PromptDataLoader(_dataset(10), 5, seed=1).epoch_order(1) == loader.epoch_order(1)
    assert PromptDataLoader(_dataset(10), 5, seed=2).epoch_order(0) != loader.epoch_order(0)
    assert _ids(next(PromptDataLoader(_dataset(4), 4, shuffle=False))) == ["s0", "s1", "s2", "s3"]


def test_steps_span_epoch_boundaries() -> None:
    loader = PromptDataLoader(_dataset(5), prompts_per_step=3, seed=0)
    steps = [next(loader) for _ in range(5)]  # 15 prompts = exactly 3 epochs
    assert [len(s.prompts) for s in steps] == [3] * 5
    assert [s.epoch for s in steps] == [0, 0, 1, 1, 2]  # epoch of the first prompt
    flat = [i for s in steps for i in _ids(s)]
    for epoch in range(3):
        assert sorted(flat[epoch * 5 : (epoch + 1) * 5]) == [f"s{i}" for i in range(5)]


def test_ranks_see_the_same_global_batch_and_disjoint_slices() -> None:
    loaders = [PromptDataLoader(_dataset(13), 6, seed=4, dp_rank=r, dp_size=3) for r in range(3)]
    for _ in range(4):
        steps = [next(lo) for lo in loaders]
        assert _ids(steps[0]) == _ids(steps[1]) == _ids(steps[2])
        assert [e for s in steps for e in s.local] == steps[0].prompts
    with pytest.raises(ValueError, match="multiple of the data-parallel size"):
        PromptDataLoader(_dataset(13), 5, dp_size=2)


def test_resume_reproduces_the_following_prompts() -> None:
    reference = PromptDataLoader(_dataset(7), prompts_per_step=3, seed=9)
    for _ in range(4):  # stop mid-epoch
        next(reference)
    state = json.loads(json.dumps(reference.state_dict()))  # survives a checkpoint round trip
    expected = [_ids(next(reference)) for _ in range(6)]

    resumed = PromptDataLoader(_dataset(7), prompts_per_step=3, seed=9)
    resumed.load_state_dict(state)
    assert [_ids(next(resumed)) for _ in range(6)] == expected
    assert resumed.step == 10

    # A different DP layout continues the same global stream.
    rank1 = PromptDataLoader(_dataset(7), prompts_per_step=3, seed=9, dp_rank=1, dp_size=3)
    rank1.load_state_dict(state)
    assert _ids(next(rank1)) == expected[0]


def test_resume_rejects_other_data_or_seed() -> None:
    state = PromptDataLoader(_dataset(7), 3, seed=9).state_dict()
    with pytest.raises(ValueError, match="fingerprint"):
        PromptDataLoader(_dataset(8), 3, seed=9).load_state_dict(state)
    with pytest.raises(ValueError, match="seed 9 but this run has 1"):
        PromptDataLoader(_dataset(7), 3, seed=1).load_state_dict(state)
    lenient = PromptDataLoader(_dataset(8), 3, seed=1)
    lenient.load_state_dict(state, strict=False)
    assert lenient.seed == 9
    with pytest.raises(ValueError, match="version"):
        lenient.load_state_dict({**state, "version": 0})
    with pytest.raises(ValueError, match="empty"):
        PromptDataLoader([], 1)

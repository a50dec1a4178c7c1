"""DAPO dynamic sampling: which groups make the batch, and how they are renumbered."""

import torch

from oumi_megatron.step import dynamic_sampling as ds
from oumi_megatron.step.reward import ScoredBatch
from oumi_megatron.step.rollout import RolloutBatch

G = 2


def _round(prompts: list[int], rewards: list[float], tag: str) -> ds.Round:
    """A replica leader's completions of ``prompts`` (G each), rewards in order."""
    ids = [p * G + g for p in prompts for g in range(G)]
    batch = RolloutBatch(
        sequence_ids=ids,
        prompt_ids=[[p] for p in ids],
        completion_ids=[[100 + s] for s in ids],
        rollout_logprobs=[[-1.0] for _ in ids],
        finish_reasons=["stop"] * len(ids),
        sample_ids=[f"{tag}{s}" for s in ids],
        prompts_text=["p"] * len(ids),
        completions_text=[f"{tag}{s}" for s in ids],
        columns=[{}] * len(ids),
    )
    adv = [r - sum(rewards[i - i % G : i - i % G + G]) / G for i, r in enumerate(rewards)]
    return ds.Round(batch, ScoredBatch(rewards=rewards, advantages=adv))


def test_local_variation_flags_the_groups_this_rank_holds() -> None:
    part = _round([1, 3], [1.0, 1.0, 0.0, 1.0], "a")  # prompt 1 equal, prompt 3 varies
    flags = ds.local_variation(part.rollouts, part.scored, num_prompts=4, group=G)
    assert flags.tolist() == [0.0, 0.0, 0.0, 1.0]


def test_select_varying_groups_in_order_and_fill_when_short() -> None:
    rounds = [[False, True, False], [True, True, False]]
    # Enough varying groups: the first 2 in (round, prompt) order; the surplus is dropped.
    assert ds.select_groups(rounds, 2) == ([(0, 1), (1, 0)], 0)
    assert ds.enough(rounds, 3) and not ds.enough(rounds, 4)
    # Short: all 3 varying ones, then the earliest zero-variance group fills the batch.
    assert ds.select_groups(rounds, 4) == ([(0, 0), (0, 1), (1, 0), (1, 1)], 1)


def test_assemble_keeps_exactly_the_selected_groups_renumbered() -> None:
    # Round 0: prompts 0 (equal), 1 (varies); round 1: prompts 0 (varies), 1 (equal).
    rounds = [
        _round([0, 1], [1.0, 1.0, 0.0, 1.0], "r0/"),
        _round([0, 1], [2.0, 0.0, 5.0, 5.0], "r1/"),
    ]
    flags = [[False, True], [True, False]]
    selection, filled = ds.select_groups(flags, 2)
    batch, scored = ds.assemble(rounds, selection, G)
    # The varying groups only, at positions 0 and 1 (sequence ids j * G + g).
    assert batch.sequence_ids == [0, 1, 2, 3]
    assert batch.sample_ids == ["r0/2", "r0/3", "r1/0", "r1/1"]
    assert scored.rewards == [0.0, 1.0, 2.0, 0.0]
    assert scored.advantages == [-0.5, 0.5, 1.0, -1.0]
    assert filled == 0
    # Every generated completion is kept for the metrics.
    merged, all_scored = ds.merge(rounds)
    assert len(merged) == 8 and len(all_scored.rewards) == 8
    assert ds.metrics(flags, filled) == {
        "dynamic_sampling/rounds": 2.0,
        "dynamic_sampling/varying_groups_frac": 0.5,
        "dynamic_sampling/filled_groups": 0.0,
    }


def test_a_rank_without_the_selected_groups_assembles_nothing() -> None:
    rounds = [ds.Round(RolloutBatch(), ScoredBatch())]
    batch, scored = ds.assemble(rounds, [(0, 0)], G)
    assert len(batch) == 0 and scored.rewards == []
    assert ds.local_variation(RolloutBatch(), ScoredBatch(), 3, G).equal(
        torch.zeros(3, dtype=torch.float64)
    )

"""Step metrics from replica tallies: values by hand, accuracy follows grpo.accuracy_reward, and
a rank without samples tallies the same keys (the all-reduce needs one key set everywhere)."""

from __future__ import annotations

import math

import pytest

from oumi_megatron.rewards.scoring import RewardResult
from oumi_megatron.step.metrics import reduce_tally, rollout_tally
from oumi_megatron.step.reward import ScoredBatch
from oumi_megatron.step.rollout import RolloutBatch

NAMES = ["exact", "dense"]


def _replica() -> tuple[RolloutBatch, ScoredBatch]:
    batch = RolloutBatch(
        sequence_ids=[0, 1, 2, 3],
        prompt_ids=[[1, 2], [1, 2], [3], [3]],
        completion_ids=[[5, 6, 7], [5], [8, 9], [8, 9, 9, 9]],
        finish_reasons=["stop", "stop", "length", "length"],
    )
    exact, dense = [1.0, 0.0, 1.0, 1.0], [0.5, 0.25, 0.25, 0.25]
    total = [e * 0 + d for e, d in zip(exact, dense, strict=True)]  # exact has weight 0
    result = RewardResult(total, {"exact": exact, "dense": dense}, {"exact": 0, "dense": 1},
                          {"exact": 0, "dense": 0}, seconds={"exact": 0.5, "dense": 2.0})  # fmt: skip
    return batch, ScoredBatch(total, [0.7, -0.7, 0.0, 0.0], result, num_zero_std_groups=1)


def test_metrics_of_one_replica_by_hand():
    batch, scored = _replica()
    metrics = reduce_tally(rollout_tally(batch, scored, NAMES, "exact"), num_generations=2)
    rewards = [0.5, 0.25, 0.25, 0.25]
    mean = sum(rewards) / 4
    assert metrics["reward/mean"] == pytest.approx(mean)
    assert metrics["reward/std"] == pytest.approx(
        math.sqrt(sum((r - mean) ** 2 for r in rewards) / 4)
    )
    assert (metrics["reward/min"], metrics["reward/max"]) == (0.25, 0.5)
    assert metrics["reward/accuracy"] == 0.75, "full marks on grpo.accuracy_reward, not the total"
    assert metrics["reward/failures"] == 1 and metrics["reward/dense/failures"] == 1
    assert metrics["reward/exact/mean"] == 0.75 and metrics["reward/dense/seconds"] == 2.0
    assert metrics["advantages/frac_zero_std_groups"] == 0.5
    assert metrics["advantages/abs_mean"] == pytest.approx(0.35)
    assert metrics["response_length/mean"] == 2.5 and metrics["response_length/max"] == 4
    assert metrics["response_length/truncated_frac"] == 0.5
    tokens = 2 + 2 + 1 + 1 + 10
    assert metrics["_tokens"] == tokens
    assert metrics["_effective_seq_len"] == pytest.approx((25 + 9 + 9 + 25) / tokens)


def test_a_rank_without_samples_tallies_the_same_keys_as_identities():
    batch, scored = _replica()
    full = rollout_tally(batch, scored, NAMES, "exact")
    empty = rollout_tally(RolloutBatch(), ScoredBatch(), NAMES, "exact")
    assert full.keys() == empty.keys()
    # Maxima of non-negative values (lengths, seconds) may start at 0 instead of -inf.
    identities = {"sum": {0.0}, "max": {-math.inf, 0.0}, "min": {math.inf}}
    for key, (op, value) in empty.items():
        assert op == full[key][0]
        assert value in identities[op], key

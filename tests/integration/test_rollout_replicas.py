"""Rollout replicas on 4 gloo ranks: DP4 and PP2×DP2 with one replica per rank give the same
samples, rewards, loss and updated weights as the same layout with one replica (rollout TP4)
over the whole world; each replica generates exactly its share, and each rank receives exactly
the sequences it trains on (counted, in bytes too).

A replica as large as the model-parallel group (TP2 training, rollout TP2) is the layout
test's TP2_topp_topk case (test_grpo_train.py): each 4-process launch here costs ~85 s, so
both layouts share one single-replica reference (DP4): with the same samples, PP2×DP2 must
also give DP4's loss and weights (the layout invariance of test_update_invariance.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import assert_same_metrics, load_weights, metrics, train

TOLERANCE = 1e-6
PROMPTS, GENERATIONS = 4, 4
STEPS = ["training.max_steps=2", "grpo.log_completions=true", "megatron.micro_batch_size=2"]
SINGLE = ["megatron.rollout_tensor_parallel_size=4"]  # one replica over the 4 ranks
# layout: (layout overrides, replica overrides, replicas, ranks per data-parallel group)
LAYOUTS = {
    "dp4": ([], [], 4, 1),
    # Replicas of one rank each: two per data-parallel group (its two pipeline stages).
    "pp2_dp2": (["megatron.pipeline_model_parallel_size=2"], [], 4, 2),
}  # fmt: skip
# Counters that legitimately differ with the replica count, and (PP2×DP2 against DP4) with
# the sequences per data-parallel rank.
LAYOUT_METRICS = ("rollout/", "exchange/", "sync/", "packing/", "microbatches_per_rank")


@pytest.fixture(scope="module")
def runs(tiny_models, tmp_path_factory) -> dict[tuple[str, str], Path]:
    root = tmp_path_factory.mktemp("replicas")
    out = {}
    out["dp4", "single"] = root / "dp4_single"
    train(4, tiny_models / "llama", out["dp4", "single"], *STEPS, *SINGLE)
    for layout, (overrides, replicas, _, _) in LAYOUTS.items():
        out[layout, "replicas"] = root / f"{layout}_replicas"
        train(4, tiny_models / "llama", out[layout, "replicas"], *STEPS, *overrides, *replicas)
    return out


def _completions(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "completions.jsonl").read_text().splitlines()]


def _without_layout_counters(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith(LAYOUT_METRICS)} for r in rows]


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_same_step_as_one_replica(runs, layout):
    single, other = runs["dp4", "single"], runs[layout, "replicas"]
    expected, actual = _completions(single), _completions(other)
    assert len(expected) == 2 * PROMPTS * GENERATIONS
    assert [(c["sequence"], c["completion"]) for c in actual] == [
        (c["sequence"], c["completion"]) for c in expected
    ], "the same samples, whatever the replicas"
    for a, b in zip(expected, actual, strict=True):
        assert b["reward"] == pytest.approx(a["reward"], abs=TOLERANCE)
        assert b["advantage"] == pytest.approx(a["advantage"], abs=TOLERANCE)
    assert_same_metrics(
        _without_layout_counters(metrics(single)), _without_layout_counters(metrics(other))
    )
    assert metrics(other)[-1]["grad_norm"] > 0, "the compared update must move the weights"
    before, after = load_weights(single / "hf_model"), load_weights(other / "hf_model")
    worst = max((before[k] - after[k]).abs().max().item() for k in before)
    assert worst <= TOLERANCE, f"{layout}: max |Δw| = {worst:.3g}"


@pytest.mark.parametrize(
    ("layout", "mode"), [("dp4", "replicas"), ("dp4", "single"), ("pp2_dp2", "replicas")]
)
def test_each_replica_generates_its_share_and_ranks_get_only_their_sequences(runs, layout, mode):
    _, _, replicas, ranks_per_dp = LAYOUTS[layout]
    replicas = replicas if mode == "replicas" else 1
    every_sequence_once = metrics(runs["dp4", "single"])[0]["exchange/bytes_received"]
    for row in metrics(runs[layout, mode]):
        assert row["rollout/replicas"] == replicas
        share = PROMPTS / replicas
        assert row["rollout/prompts_per_replica_min"] == row["rollout/prompts_per_replica_max"]
        assert row["rollout/prompts_per_replica_max"] == share
        # Every sequence reaches exactly the ranks of its data-parallel group: no more.
        sequences = PROMPTS * GENERATIONS * ranks_per_dp
        assert row["exchange/sequences_received"] == sequences
        assert row["exchange/sequences_trained"] == sequences
        if row["step"] == 1:  # the same samples in every case (checked above)
            assert row["exchange/bytes_received"] == every_sequence_once * ranks_per_dp

"""HF ⇄ Megatron on gloo processes: logits parity, exact export, convert-once reuse.

Two torchrun launches (2 and 4 ranks) cover every fixture × layout (parity_worker.CASES).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import torchrun

WORKER = Path(__file__).with_name("parity_worker.py")
LOGIT_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def parity_results(tiny_models, tmp_path_factory) -> dict[str, dict]:
    """Two launches sharing the converted checkpoints: 2 ranks (the 1- and 2-rank layouts),
    then 4 ranks (the rest, and the stale-source case)."""
    root = tmp_path_factory.mktemp("parity")
    results: dict[str, dict] = {}
    for ranks in (2, 4):
        path = root / f"results_{ranks}.jsonl"
        torchrun(ranks, WORKER, str(tiny_models), str(path), "all", str(root / "parity_runs"))
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        results.update({line["case"]: line for line in lines})
    return results


def _case_ids():
    from parity_worker import CASES

    return [f"{arch}-{layout}" for arch, layout in CASES]


@pytest.mark.parametrize("case", _case_ids())
def test_logits_match_hf(parity_results, case):
    ranks = parity_results[case]["ranks"]
    diffs = [r["max_abs_diff"] for r in ranks if "max_abs_diff" in r]
    assert diffs, "no rank produced logits (the last pipeline stage must)"
    assert max(diffs) <= LOGIT_TOLERANCE, f"{case}: max |Δ| {max(diffs):.3g}"
    assert all(r["argmax_equal"] for r in ranks if "argmax_equal" in r)


@pytest.mark.parametrize("case", [c for c in _case_ids() if "CP" not in c])
def test_packed_rows_match_hf(parity_results, case):
    """Sequences of different lengths packed in one row (THD): each one's logits equal Hugging
    Face's on it alone (packed attention with this family's windows, sinks, soft-caps, MLA)."""
    diffs = [
        r["packed_max_abs_diff"]
        for r in parity_results[case]["ranks"]
        if r.get("packed_max_abs_diff") is not None
    ]
    assert diffs, "no rank produced packed logits (the last pipeline stage must)"
    assert max(diffs) <= LOGIT_TOLERANCE, f"{case}: packed max |Δ| {max(diffs):.3g}"


@pytest.mark.parametrize("case", _case_ids())
def test_export_round_trip_is_bit_identical(parity_results, case):
    rank0 = parity_results[case]["ranks"][0]
    assert rank0["export_identical"], f"{case}: tensors differ: {rank0['export_mismatched']}"
    assert rank0["export_logits_diff"] == 0.0


@pytest.mark.parametrize("case", [c for c in _case_ids() if c.endswith("-TP1×PP1")])
def test_rollout_engine_receives_the_weights(parity_results, case):
    """Every family's weights reach the CPU rollout engine exactly: through the export on the
    first sync, by direct copies from the parameters after it (each rank, DP2)."""
    # GPT-OSS exports each expert bias stacked over the experts and re-interleaved: no view
    # of one parameter, so its syncs stay on the export path (still exact).
    direct = 0.0 if case.startswith("gpt_oss") else 1.0
    for rank in parity_results[case]["ranks"]:
        assert (rank["sync_export"], rank["sync_direct"]) == (0.0, direct), rank
        assert rank["sync_export_identical"] and rank["sync_direct_identical"], rank


def test_other_layouts_reuse_converted_checkpoint(parity_results):
    """Converted once (at the first layout), then loaded into every other layout.

    Timing is asserted in test_convert_once.py on a model large enough to measure."""
    by_arch: dict[str, list[dict]] = {}
    for case, line in parity_results.items():
        if case != "stale":
            by_arch.setdefault(line["ranks"][0]["arch"], []).append(line)
    for arch, lines in by_arch.items():
        first, *later = lines
        assert not any(r["reused"] for r in first["ranks"]), f"{arch}: first run must convert"
        assert later and all(r["reused"] for line in later for r in line["ranks"])


def test_changed_source_is_reconverted(parity_results):
    stale = parity_results["stale"]
    assert stale["reused"] is False
    assert stale["max_abs_diff"] <= LOGIT_TOLERANCE
    assert stale["manifest_source"].endswith("qwen2")

"""The start-of-run layout lines and the end-of-run summary (metrics/summary.py)."""

from __future__ import annotations

from oumi_megatron.metrics.summary import LayoutFacts, layout_lines, run_lines


def test_layout_lines_show_the_batch_arithmetic():
    facts = LayoutFacts(
        world_size=8, layout="TP2×PP2", data_parallel_size=2, device="GPU",
        parameters_rank0=1_234_000, rollout="4 rollout replica(s) of 2 rank(s)", engine="vllm",
        weight_sync="inprocess", prompts_per_step=32, num_generations=8, global_batch_size=128,
        micro_batch_size=4, microbatches_per_rank=16, optimizer_steps_per_step=2,
        packing="padded rows", steps=100, steps_from="training.max_steps",
    )  # fmt: skip
    assert layout_lines(facts) == [
        "layout: 8 process(es) on GPU: TP2×PP2×DP2; 1.23 M parameters on rank 0",
        "rollout: 4 rollout replica(s) of 2 rank(s); engine vllm, weight sync inprocess",
        "batch: 32 prompts × 8 generations = 256 sequences per step = 2 optimizer step(s) of "
        "128 (micro batch 4 × DP2 × 16 per rank); padded rows",
        "steps: 100 (training.max_steps)",
    ]


def test_run_lines(tmp_path):
    rows = [{"time/step": 1.0 + i, "time/rollout": 0.5, "time/update": 0.25 * i,
             "reward/mean": float(i)} for i in range(12)]  # fmt: skip
    (tmp_path / "hf_model").mkdir()
    lines = run_lines(rows, 80.0, [tmp_path / "hf_model", tmp_path / "checkpoints"])
    assert lines == [
        "run: 12 step(s) in 80.0 s, 6.500 s/step (rollout 0.500, update 1.375 s per step)",
        "reward/mean: first 10 step(s) 4.5000, last 10 6.5000",
        f"outputs: {tmp_path / 'hf_model'}",
    ]
    assert run_lines([], 3.0, []) == ["run: no step trained (3.0 s)"]

"""The training-step benchmark runs its tensor-parallel form (torchrun, one TP group, also with
sequence parallelism) on CPU, so a GPU run of it meets no new code: per-device figures, rank
0's profile."""

from __future__ import annotations

import json
import subprocess
import sys

from helpers import REPO, quiet_env


def test_tp2_packed_and_padded_report_per_device_figures(tiny_models, tmp_path):
    command = [
        sys.executable, str(REPO / "benchmarks" / "train_step.py"),
        "--model-dir", str(tiny_models / "llama"), "--work", str(tmp_path), "--tp", "2",
        "--modes", "packed,padded,packed_sp", "--profile-modes", "packed", "--json", str(tmp_path / "r.json"),
        "--prompts", "2", "--generations", "4", "--min-prompt", "8", "--max-prompt", "16",
        "--max-completion", "48", "--micro-batch-size", "4", "--token-budget", "512",
        "--warmup", "1", "--reps", "1",
    ]  # fmt: skip
    proc = subprocess.run(command, env=quiet_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    modes = json.loads((tmp_path / "r.json").read_text())["modes"]
    for mode in ("packed", "padded", "packed_sp"):
        result = modes[mode]
        assert "error" not in result, result.get("error")
        assert result["devices"] == 2
        # Per device: the batch's real tokens over the time, halved.
        expected = result["real_tokens"] / result["median_seconds"] / 2
        assert abs(result["tokens_per_second"] - expected) <= 1e-6 * expected
    assert modes["packed"]["computed_tokens"] == modes["packed"]["real_tokens"]
    # Sequence parallelism: each packed micro-batch padded to a multiple of TP tokens.
    sp = modes["packed_sp"]
    assert sp["real_tokens"] == modes["packed"]["real_tokens"]
    assert sp["real_tokens"] <= sp["computed_tokens"] < sp["real_tokens"] + 2 * sp["microbatches"]
    assert modes["padded"]["computed_tokens"] > modes["padded"]["real_tokens"]
    profile = (tmp_path / "profile_packed.txt").read_text()
    assert profile.startswith("Device busy") and "Copies by shape" in profile


def test_memsets_are_grouped_by_the_op_that_issued_them():
    import importlib.util
    from types import SimpleNamespace as Event

    spec = importlib.util.spec_from_file_location("train_step", REPO / "benchmarks/train_step.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    graph = Event(name="## Call CompiledFxGraph abc", cpu_parent=None)
    fa4 = Event(name="oumi_megatron::fa4_bwd", cpu_parent=graph)
    zeros = Event(name="aten::zeros", input_shapes=[[8, 2, 262144]], cpu_parent=fa4)
    zero_ = Event(name="aten::zero_", input_shapes=[[8, 2, 262144]], cpu_parent=zeros)
    fill = Event(name="aten::fill_", input_shapes=[[4096]], cpu_parent=graph)
    events = [
        Event(name="cudaMemsetAsync", cpu_parent=zero_, device_time_total=300.0),
        Event(name="cudaMemsetAsync", cpu_parent=zero_, device_time_total=200.0),
        Event(name="cudaMemsetAsync", cpu_parent=fill, device_time_total=700.0),
        Event(name="cudaLaunchKernel", cpu_parent=fill, device_time_total=9.0),
    ]
    lines = bench.memsets_by_caller(events).splitlines()
    assert lines[0].startswith("calls     1  device     0.70 ms  aten::fill_ [[4096]]")
    assert lines[0].endswith("in ## Call CompiledFxGraph abc")
    assert lines[1].startswith("calls     2  device     0.50 ms  aten::zero_ [[8, 2, 262144]]")
    assert lines[1].endswith("in oumi_megatron::fa4_bwd")
    assert bench.memsets_by_caller(events[3:]) == "none"

"""Training-step benchmark: MFU, tokens/s and peak memory of the GRPO update on one device.

    python3 benchmarks/train_step.py --model-dir DIR [--modes packed,padded,...] [--json OUT]

DIR holds a Hugging Face checkpoint (random weights of a published config, e.g.
`python -m oumi_megatron.testing.tiny_models qwen2.5_1.5b DIR`). The batch is GRPO-shaped:
`--prompts` prompt groups of `--generations` completions each, prompt lengths per group and
completion lengths skewed (most short, a tail up to `--max-completion`), or all
`--uniform-length` tokens long. Each mode runs in a
fresh process (a configuration change in one process skews later timings), loads the model in
bf16 (fp32 on CPU), and times the real update (`step.update.run_update`: one optimizer step,
forward + backward of the clipped-surrogate loss over every micro-batch, optimizer step) after
warm-up steps. Modes:

- ``packed``: micro-batches filled to `--token-budget` tokens with whole sequences (THD).
- ``padded``: `--micro-batch-size` right-padded rows per micro-batch.
- ``*_local``: Megatron's own local `DotProductAttention` instead of ours (padded only: it
  refuses packed sequences).
- ``*_compiled``: every transformer layer under `torch.compile`.
- ``*_plainglu``: SwiGLU as SiLU, multiply and (backward) concatenation instead of
  Megatron's fused kernels (``model.provider.fused_swiglu``, the default on GPU).
- ``*_megglu`` / ``*_tritonglu``: the fused SwiGLU's backward as Megatron writes it
  (compiled; its concatenation of the two halves' gradients) / as one Triton pass
  (``model.swiglu_backward``; ``OUMI_MEGATRON_SWIGLU_BACKWARD``); otherwise the default.
- ``*_foreachadam``: torch's multi-tensor AdamW instead of its fused single-kernel one (the
  trainer's default on GPU).
- ``*_batchfirst``: the logits as Megatron's ``GPTModel`` returns them by default (a
  batch-first copy of the whole tokens × vocabulary block) instead of read in their own
  sequence-first memory (``training.policy.sequence_first_logits``); differs with > 1 row.
- ``*_eagerlp``: the log-prob / entropy / gradient chunk kernels uncompiled (eager torch,
  ``OUMI_MEGATRON_COMPILE_LOGPROBS=0``); the other modes compile them (the trainer's default
  on GPU).
- ``*_fa2``: the attention on torch's kernels (FlashAttention-2 varlen for packed rows, SDPA
  for padded ones) even where FlashAttention-4 applies (``model.flash4``;
  ``OUMI_MEGATRON_FLASH_ATTENTION=fa2``).
- ``*_hookwgrad``: weight gradients written by autograd and added to DDP's buffer by its hook,
  instead of accumulated by the weight-gradient GEMM itself (``model.fused_wgrad``, the
  trainer's default on GPU: ``gradient_accumulation_fusion``).
- ``*_blaslt``: torch's matrix multiplies through cuBLASLt (``torch.backends.cuda.
  preferred_blas_library("cublaslt")``) instead of torch's default cuBLAS entry points.
- ``*_norrp``: bf16 matrix multiplies without reduced-precision reductions
  (``torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = False``: split-K
  partial sums kept in fp32).
- ``*_sp``: sequence parallelism over the ``--tp`` group (micro-batches padded to a multiple
  of TP tokens; with compiled layers the linear layers run eagerly between compiled pieces).

``--tp N`` runs every mode under torchrun on N devices in one tensor-parallel group (the same
batch on every rank); times, tokens/s and MFU are then per device, from rank 0.

MFU = model FLOPs of the real tokens (`metrics.mfu`: 6·N + attention at each sequence's own
length, padding not counted) / (time × peak bf16 FLOP/s of the device). Ratios (padded time /
packed time, local / ours, eager / compiled) come from one run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
MODES = ("packed", "padded", "packed_eagerlp", "packed_plainglu", "padded_local", "packed_compiled",
         "padded_compiled")  # fmt: skip


def grpo_lengths(args) -> tuple[list[int], list[int]]:
    """(prompt length, completion length) of every sequence: groups share their prompt.

    ``--uniform-length L``: every sequence L tokens (an eighth of them prompt), as in a
    pretraining-style benchmark, where padded rows hold no padding."""
    if args.uniform_length:
        count = args.prompts * args.generations
        prompt = args.uniform_length // 8
        return [prompt] * count, [args.uniform_length - prompt] * count
    rng = random.Random(args.seed)
    prompts, completions = [], []
    for _ in range(args.prompts):
        prompt = rng.randint(args.min_prompt, args.max_prompt)
        for _ in range(args.generations):
            # Skewed: most completions short, one in eight up to the maximum.
            long = rng.random() < 0.125
            short_low = max(4, args.max_completion // 64)
            short = (short_low, max(short_low, args.max_completion // 5))
            low, high = (args.max_completion // 2, args.max_completion) if long else short
            prompts.append(prompt)
            completions.append(rng.randint(low, high))
    return prompts, completions


def synthetic_sequences(prompt_lens, completion_lens, vocab: int, seed: int):
    from oumi_megatron.training.step_batches import StepSequences

    g = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(3, vocab, (p,), generator=g).tolist() for p in prompt_lens]
    completions = [torch.randint(3, vocab, (c,), generator=g).tolist() for c in completion_lens]
    rollout = [(-torch.rand(c, generator=g) * 3).tolist() for c in completion_lens]
    advantages = torch.randn(len(prompts), generator=g).tolist()
    return StepSequences.from_rollouts(prompts, completions, rollout, advantages)


def load_policy(args, mode: str):
    from megatron.core.distributed import DistributedDataParallelConfig

    from oumi_megatron.model.bridge import load_megatron_model
    from oumi_megatron.parallel.layout import ParallelLayout
    from oumi_megatron.parallel.startup import init_distributed, init_model_parallel
    from oumi_megatron.training.optimizer import OptimizerSettings, build_optimizer
    from oumi_megatron.training.policy import MegatronPolicy

    init_distributed()
    layout = ParallelLayout(tp=args.tp, sequence_parallel="_sp" in mode)
    init_model_parallel(layout, seed=5)
    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32

    def configure(provider):
        provider.calculate_per_token_loss = True
        if "_plainglu" in mode:
            provider.bias_activation_fusion = False
        if "_local" in mode:
            from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec

            provider.transformer_layer_spec = lambda config: get_gpt_layer_local_spec(
                qk_layernorm=config.qk_layernorm, normalization=config.normalization
            )

    loaded = load_megatron_model(
        args.model_dir,
        Path(args.work) / "megatron_checkpoint",
        layout,
        params_dtype=dtype,
        configure=configure,
        ddp_config=DistributedDataParallelConfig(),
    )
    from oumi_megatron.config.megatron_sections import TransformerConfig

    # The trainer's default (`gradient_accumulation_fusion: None`), unless the mode says hook.
    fuse = TransformerConfig().resolved_gradient_accumulation_fusion(torch.cuda.is_available())
    if fuse and "_hookwgrad" not in mode:
        from oumi_megatron.model import fused_wgrad

        fused_wgrad.install(loaded.chunks)
    if "_compiled" in mode:
        from oumi_megatron.model.compile import compile_transformer_layers

        compile_transformer_layers(loaded.chunks)
    settings = OptimizerSettings(learning_rate=1e-6, total_steps=1000, decay_style="constant")
    optimizer, scheduler = build_optimizer(loaded.chunks, settings, dtype)
    if "_foreachadam" in mode:  # torch's multi-tensor AdamW, as before the fused default
        for group in optimizer.optimizer.param_groups:
            group.update(fused=False, foreach=True)
    policy = MegatronPolicy(loaded.chunks, 1.0, optimizer, scheduler)
    if "_batchfirst" in mode:
        policy._sequence_first = False
    return policy, loaded.provider


def update_settings(args, packing: bool, sp_size: int = 1):
    from oumi_megatron.algorithms.grpo import GrpoLossConfig
    from oumi_megatron.step.update import UpdateSettings
    from oumi_megatron.training.step_batches import BatchingSettings

    batching = BatchingSettings(
        micro_batch_size=args.micro_batch_size,
        dp_size=1,
        dp_rank=0,
        packing=packing,
        token_budget=args.token_budget,
        sp_size=sp_size,
    )
    return UpdateSettings(GrpoLossConfig(), batching, loss_scale_factor=args.max_completion)


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def run_mode(args) -> dict:
    """One mode in this process; returns its measurements."""
    from oumi_megatron.metrics.mfu import (
        effective_seq_len,
        estimate_flops_per_token,
        peak_flops_for_device,
    )
    from oumi_megatron.step.update import build_minibatches, run_update

    mode = args.one
    from oumi_megatron.algorithms.logprobs import COMPILE_ENV
    from oumi_megatron.model.flash4 import FLASH_ENV

    os.environ[COMPILE_ENV] = "0" if "_eagerlp" in mode else "1"
    if "_fa2" in mode:
        os.environ[FLASH_ENV] = "fa2"
    if "_blaslt" in mode:
        torch.backends.cuda.preferred_blas_library("cublaslt")
    if "_norrp" in mode:
        torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = False
    from oumi_megatron.model.swiglu_backward import SWIGLU_ENV

    for suffix, choice in (("_megglu", "megatron"), ("_tritonglu", "triton")):
        if suffix in mode:
            os.environ[SWIGLU_ENV] = choice
    policy, provider = load_policy(args, mode)
    prompt_lens, completion_lens = grpo_lengths(args)
    seqs = synthetic_sequences(prompt_lens, completion_lens, provider.vocab_size, args.seed)
    sp_size = args.tp if "_sp" in mode else 1
    settings = update_settings(args, packing=mode.startswith("packed"), sp_size=sp_size)
    batches = build_minibatches(seqs, settings, "cpu")[0].batches
    lengths = [p + c for p, c in zip(prompt_lens, completion_lens, strict=True)]
    for _ in range(args.warmup):
        run_update(policy, None, seqs, settings)
    sync()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.reps):
        sync()
        start = time.perf_counter()
        run_update(policy, None, seqs, settings)
        sync()
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    flops_per_token = estimate_flops_per_token(
        num_layers=provider.num_layers,
        hidden_size=provider.hidden_size,
        ffn_hidden_size=provider.ffn_hidden_size,
        num_attention_heads=provider.num_attention_heads,
        num_kv_heads=provider.num_query_groups or provider.num_attention_heads,
        vocab_size=provider.vocab_size,
        seq_len=effective_seq_len(lengths),
        gated_mlp=provider.gated_linear_unit,
    )
    tokens = sum(lengths)
    peak = peak_flops_for_device() if torch.cuda.is_available() else None
    devices = torch.distributed.get_world_size()  # one tensor-parallel group: per device
    result = {
        "mode": mode,
        "devices": devices,
        "microbatches": len(batches),
        "computed_tokens": sum(b.input_ids.numel() for b in batches),
        "real_tokens": tokens,
        "median_seconds": seconds,
        "all_seconds": times,
        "tokens_per_second": tokens / seconds / devices,
        "tflops": tokens * flops_per_token / seconds / devices / 1e12,
        "mfu": tokens * flops_per_token / seconds / devices / peak if peak else None,
    }
    if torch.cuda.is_available():
        result["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    if "_compiled" in mode:
        from torch._dynamo.utils import counters

        result["graph_breaks"] = sum(counters["graph_break"].values())
        result["compiled_graphs"] = counters["stats"]["unique_graphs"]
    if args.profile:  # every rank runs them (collectives); rank 0 writes
        path = args.profile if torch.distributed.get_rank() == 0 else None
        result["profile"] = profile_update(policy, seqs, settings, path)
        result["syncs"] = find_syncs(policy, seqs, settings, path and path + ".syncs")
    return result


def profile_update(policy, seqs, settings, path: str | None) -> str | None:
    """One update under torch.profiler: the kernels that take the time, to `path` (None:
    profiled, not written)."""
    from torch.profiler import ProfilerActivity, profile

    from oumi_megatron.step.update import run_update

    activities = [ProfilerActivity.CPU] + (
        [ProfilerActivity.CUDA] if torch.cuda.is_available() else []
    )
    with profile(activities=activities, record_shapes=True) as prof:
        start = time.perf_counter()
        run_update(policy, None, seqs, settings)
        sync()
        wall = time.perf_counter() - start
    if path is None:
        return None
    key = "cuda_time_total" if torch.cuda.is_available() else "cpu_time_total"
    averages = prof.key_averages()
    host = averages.table(sort_by="self_cpu_time_total", row_limit=30)
    busy, gaps = device_busy_seconds(prof)
    Path(path).write_text(
        f"Device busy (union of kernels, copies, fills): {busy:.3f} s of {wall:.3f} s (update "
        f"under the profiler)\n{gaps}\n\n"
        + averages.table(sort_by=key, row_limit=80)
        + "\n\nBy host time:\n"
        + host
        + "\n\nCopies by shape:\n"
        + copies_by_shape(prof)
        + "\n\nDevice memsets by the op that asked for them:\n"
        + memsets_by_caller(prof.events())
    )
    return path


def memsets_by_caller(events) -> str:
    """The update's ``cudaMemsetAsync`` calls grouped by the ATen op that issued them (with its
    input shapes) and the nearest enclosing op that is not ATen (a custom op, a compiled graph,
    an autograd node), heaviest device time first."""
    groups: dict[tuple[str, str, str], list[float]] = {}
    for event in events:
        if event.name != "cudaMemsetAsync":
            continue
        chain, parent = [], event.cpu_parent
        while parent is not None:
            chain.append(parent)
            parent = parent.cpu_parent
        aten = next((p for p in chain if p.name.startswith("aten::")), None)
        owner = next((p.name for p in chain if not p.name.startswith("aten::")), "-")
        key = (aten.name if aten else "-", str(aten.input_shapes) if aten else "", owner[:70])
        groups.setdefault(key, []).append(event.device_time_total)
    if not groups:
        return "none"
    rows = sorted(groups.items(), key=lambda item: -sum(item[1]))
    return "\n".join(
        f"calls {len(times):5}  device {sum(times) / 1e3:8.2f} ms  {op} {shapes}  in {owner}"
        for (op, shapes, owner), times in rows[:20]
    )


def copies_by_shape(prof) -> str:
    """The copy and clone calls of the profiled update, grouped by their input shapes."""
    rows = [
        e
        for e in prof.key_averages(group_by_input_shape=True)
        if e.key in ("aten::copy_", "aten::clone", "aten::contiguous", "aten::to")
    ]
    rows.sort(key=lambda e: -e.device_time_total)
    return "\n".join(
        f"{e.key:18} calls {e.count:5}  device {e.device_time_total / 1e3:8.2f} ms  "
        f"shapes {e.input_shapes}"
        for e in rows[:25]
    )


def device_busy_seconds(prof) -> tuple[float, str]:
    """Seconds in which the device ran anything (the union of its activity intervals; the
    profiler's own "Command Buffer Full" / buffer markers are host waits, left out), and the
    longest idle gaps with the device work on either side."""
    events = sorted(
        (e.start_ns(), e.start_ns() + e.duration_ns(), e.name())
        for e in prof.profiler.kineto_results.events()
        if e.device_type() == torch.autograd.DeviceType.CUDA
        and "Buffer" not in e.name()
        and e.duration_ns() > 0
    )
    busy, end, last, gaps = 0, None, "", []
    for lo, hi, name in events:
        if end is not None and lo > end:
            gaps.append((lo - end, (end - events[0][0]) / 1e6, last, name))
        if end is None or lo > end:
            busy += hi - lo
        elif hi > end:
            busy += hi - end
        if end is None or hi > end:
            end, last = hi, name
    gaps.sort(reverse=True)
    idle = sum(g[0] for g in gaps)
    lines = [f"Idle gaps: {len(gaps)}, {idle / 1e9:.3f} s in all; the longest:"]
    lines += [
        f"  {g / 1e6:7.2f} ms at {at:8.1f} ms  after {before[:60]!r}  before {after[:60]!r}"
        for g, at, before, after in gaps[:15]
    ]
    return busy / 1e9, "\n".join(lines)


def find_syncs(policy, seqs, settings, path: str | None) -> int:
    """One update with CUDA's sync debug mode: where the host waits for the device, by call
    stack (each stack once, with its count), to `path`; returns how many waits."""
    import traceback
    import warnings
    from collections import Counter

    from oumi_megatron.step.update import run_update

    if not torch.cuda.is_available():
        return 0
    stacks: Counter = Counter()

    def record(message, category, filename, lineno, file=None, line=None):
        frames = [f for f in traceback.extract_stack()[:-1] if "warnings" not in f.filename]
        stacks["".join(traceback.format_list(frames[-8:])) + f"  -> {message}\n"] += 1

    with warnings.catch_warnings():  # restores the filters and showwarning on exit
        warnings.simplefilter("always")
        warnings.showwarning = record
        torch.cuda.set_sync_debug_mode("warn")
        try:
            run_update(policy, None, seqs, settings)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    report = [f"{count} x\n{stack}" for stack, count in stacks.most_common()]
    if path is not None:
        Path(path).write_text("\n".join(report))
    return sum(stacks.values())


def drive(args) -> dict:
    """Every mode in its own process; ratios between them."""
    results = {}
    for mode in args.modes.split(","):
        launcher = [sys.executable]
        if args.tp > 1:
            launcher += [
                "-m",
                "torch.distributed.run",
                "--standalone",
                f"--nproc-per-node={args.tp}",
            ]
        command = [*launcher, __file__, "--one", mode, *passthrough(args)]
        if args.profile_modes and mode in args.profile_modes.split(","):
            command += ["--profile", str(Path(args.work) / f"profile_{mode}.txt")]
        done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=child_env())
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode != 0 or not lines:
            results[mode] = {"error": (done.stdout + done.stderr)[-3000:]}
        else:
            results[mode] = json.loads(lines[-1])
        print(json.dumps({mode: summary(results[mode])}), file=sys.stderr, flush=True)
        report = {"device": device_name(), "modes": results, "ratios": ratios(results)}
        if args.json:  # after every mode: a run cut short keeps what it measured
            Path(args.json).write_text(json.dumps(report, indent=1))
    return report


def summary(result: dict) -> dict:
    keys = ("median_seconds", "tokens_per_second", "mfu", "peak_memory_gib", "devices", "microbatches",
            "computed_tokens", "real_tokens", "error")  # fmt: skip
    return {k: result[k] for k in keys if k in result}


def ratios(results: dict) -> dict:
    def speedup(slow: str, fast: str) -> float | None:
        a, b = results.get(slow, {}), results.get(fast, {})
        if "median_seconds" in a and "median_seconds" in b:
            return a["median_seconds"] / b["median_seconds"]
        return None

    pairs = {
        "packed_over_padded": ("padded", "packed"),
        "ours_over_local_attention": ("padded_local", "padded"),
        "fused_over_eager_logprobs": ("packed_eagerlp", "packed"),
        "fused_over_plain_swiglu": ("packed_plainglu", "packed"),
        "compiled_over_eager_packed": ("packed", "packed_compiled"),
        "compiled_over_eager_padded": ("padded", "padded_compiled"),
        "packed_compiled_over_padded_compiled": ("padded_compiled", "packed_compiled"),
        "fa4_over_fa2_packed_compiled": ("packed_compiled_fa2", "packed_compiled"),
        "fused_wgrad_packed_compiled": ("packed_compiled_hookwgrad", "packed_compiled"),
        "fused_wgrad_padded_compiled": ("padded_compiled_hookwgrad", "padded_compiled"),
        "blaslt_padded_compiled": ("padded_compiled", "padded_compiled_blaslt"),
        "fp32_reductions_padded_compiled": ("padded_compiled", "padded_compiled_norrp"),
        "fa4_over_sdpa_padded_compiled": ("padded_compiled_fa2", "padded_compiled"),
        "triton_swiglu_back_padded_compiled": (
            "padded_compiled_megglu",
            "padded_compiled_tritonglu",
        ),
        "triton_swiglu_back_packed_compiled": (
            "packed_compiled_megglu",
            "packed_compiled_tritonglu",
        ),
        "sp_over_tp_packed_compiled": ("packed_compiled", "packed_compiled_sp"),
        "sp_over_tp_padded_compiled": ("padded_compiled", "padded_compiled_sp"),
    }
    return {name: speedup(*pair) for name, pair in pairs.items()}


def passthrough(args) -> list[str]:
    names = ("model_dir", "work", "prompts", "generations", "min_prompt", "max_prompt",
             "max_completion", "uniform_length", "micro_batch_size", "token_budget", "warmup",
             "reps", "seed", "tp")  # fmt: skip
    return [item for n in names for item in (f"--{n.replace('_', '-')}", str(getattr(args, n)))]


def child_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.setdefault("MASTER_PORT", str(29500 + os.getpid() % 1000))
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
    return env


def device_name() -> str:
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--work", default=None, help="converted checkpoint and profiles")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--profile-modes", default="", help="modes to profile (one update)")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--min-prompt", type=int, default=64)
    parser.add_argument("--max-prompt", type=int, default=256)
    parser.add_argument("--max-completion", type=int, default=2048)
    parser.add_argument("--uniform-length", type=int, default=0, help="all sequences this long")
    parser.add_argument("--micro-batch-size", type=int, default=8)
    parser.add_argument("--token-budget", type=int, default=16384)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tp", type=int, default=1, help="tensor-parallel devices (torchrun)")
    parser.add_argument("--json", default=None, help="write the result here too")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--profile", default=None, help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    args.work = args.work or tempfile.mkdtemp(prefix="train_step_")
    if args.one:
        result = run_mode(args)
        if torch.distributed.get_rank() == 0:
            print(json.dumps(result), flush=True)
        return
    print(json.dumps(drive(args), indent=1))


if __name__ == "__main__":
    main()

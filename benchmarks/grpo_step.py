"""GRPO step benchmark: update time with packing vs padding on skewed lengths, and the phases
of a real training run.

    .venv/bin/python benchmarks/grpo_step.py [--reps 3] [--steps 10] [--json]

1. Update phase alone (1 process, gloo on CPU / NCCL on GPU): the real `run_update` (old
   log-probs forward + clipped-surrogate forward/backward + optimizer step) on one fixed batch
   of sequences with skewed lengths (most short, a few long), with
   `enable_sequence_packing` on (token budget = micro-batch size x longest length, the
   trainer's default) and off (padded micro-batches). The two alternate, each measured `reps`
   times after one warm-up; medians give tokens/s and the speed-up padded / packed, measured
   in one process.
2. End to end: `python -m oumi_megatron train` on configs/recipes/tiny_grpo_cpu.yaml for
   `steps` steps (1 process, checkpoint every `save_steps`), medians of the per-phase times in
   its metrics.jsonl (first step skipped as warm-up).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from oumi_megatron.step.update import UpdateSettings
    from oumi_megatron.training.policy import MegatronPolicy
    from oumi_megatron.training.step_batches import StepSequences

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "configs" / "recipes" / "tiny_grpo_cpu.yaml"
PHASES = ("rollout", "reward", "exchange", "update", "sync", "checkpoint", "step")
PROMPT_TOKENS = 8
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


# ---- the update phase, packed vs padded ------------------------------------------------------


def build_model(directory: Path, hidden: int, layers: int, vocab: int, max_len: int) -> Path:
    """A random Llama-shaped checkpoint (GQA 4/2 heads), written offline."""
    from oumi_megatron.testing.tiny_models import build_llama

    return build_llama(directory, hidden, layers, vocab, heads=4, kv_heads=2, max_len=max_len)


def skewed_lengths(args: argparse.Namespace) -> list[int]:
    """`num_long` sequences of [max_len/2, max_len] tokens, the rest of [min_len, 4 x min_len],
    shuffled so that long ones land in different padded micro-batches."""
    rng = random.Random(args.seed)
    long = [rng.randint(args.max_len // 2, args.max_len) for _ in range(args.num_long)]
    short_count = args.num_sequences - args.num_long
    short = [rng.randint(args.min_len, 4 * args.min_len) for _ in range(short_count)]
    lengths = long + short
    rng.shuffle(lengths)
    return lengths


def synthetic_sequences(lengths: list[int], vocab: int, seed: int) -> StepSequences:
    """Prompt + completion token ids, rollout log-probs and advantages for `lengths`."""
    from oumi_megatron.training.step_batches import StepSequences

    g = torch.Generator().manual_seed(seed)
    prompts, completions, rollout_logprobs = [], [], []
    for length in lengths:
        prompts.append(torch.randint(3, vocab, (PROMPT_TOKENS,), generator=g).tolist())
        completion = length - PROMPT_TOKENS
        completions.append(torch.randint(3, vocab, (completion,), generator=g).tolist())
        rollout_logprobs.append((-torch.rand(completion, generator=g) * 5).tolist())
    advantages = torch.randn(len(lengths), generator=g).tolist()
    return StepSequences.from_rollouts(prompts, completions, rollout_logprobs, advantages)


def load_policy(model_dir: Path, checkpoint_dir: Path) -> MegatronPolicy:
    """Megatron model (DDP-wrapped) + optimizer on a 1-process group, as the trainer builds it."""
    from megatron.core.distributed import DistributedDataParallelConfig

    from oumi_megatron.model.bridge import load_megatron_model
    from oumi_megatron.parallel.layout import ParallelLayout
    from oumi_megatron.parallel.startup import init_distributed, init_model_parallel
    from oumi_megatron.training.optimizer import OptimizerSettings, build_optimizer
    from oumi_megatron.training.policy import MegatronPolicy

    init_distributed()
    init_model_parallel(ParallelLayout(), seed=5)
    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    loaded = load_megatron_model(
        str(model_dir),
        checkpoint_dir,
        ParallelLayout(),
        params_dtype=dtype,
        configure=lambda provider: setattr(provider, "calculate_per_token_loss", True),
        ddp_config=DistributedDataParallelConfig(),
    )
    settings = OptimizerSettings(learning_rate=1e-5, total_steps=1000, decay_style="constant")
    optimizer, scheduler = build_optimizer(loaded.chunks, settings, dtype)
    return MegatronPolicy(loaded.chunks, 1.0, optimizer, scheduler)


def update_settings(packing: bool, args: argparse.Namespace) -> UpdateSettings:
    from oumi_megatron.algorithms.grpo import GrpoLossConfig
    from oumi_megatron.step.update import UpdateSettings
    from oumi_megatron.training.step_batches import BatchingSettings

    batching = BatchingSettings(
        micro_batch_size=args.micro_batch_size,
        dp_size=1,
        dp_rank=0,
        packing=packing,
        token_budget=args.micro_batch_size * args.max_len,
    )
    return UpdateSettings(GrpoLossConfig(), batching, loss_scale_factor=args.max_len)


def computed_tokens(seqs: StepSequences, settings: UpdateSettings) -> tuple[int, int]:
    """(micro-batches, token positions the model computes, padding included) of one update."""
    from oumi_megatron.training.step_batches import build_microbatches

    batches, _ = build_microbatches(seqs, settings.batching)
    return len(batches), sum(b.input_ids.numel() for b in batches)


def timed_update(policy: MegatronPolicy, seqs: StepSequences, settings: UpdateSettings) -> float:
    from oumi_megatron.step.update import run_update

    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    run_update(policy, None, seqs, settings)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def packing_benchmark(args: argparse.Namespace, work: Path) -> dict:
    model_dir = build_model(work / "hf", args.hidden, args.layers, args.vocab, args.max_len)
    policy = load_policy(model_dir, work / "megatron_checkpoint")
    lengths = skewed_lengths(args)
    seqs = synthetic_sequences(lengths, args.vocab, args.seed)
    modes = {"packed": update_settings(True, args), "padded": update_settings(False, args)}
    times: dict[str, list[float]] = {mode: [] for mode in modes}
    for settings in modes.values():
        timed_update(policy, seqs, settings)  # warm-up
    for _ in range(args.reps):
        for mode, settings in modes.items():  # alternate: slow drifts hit both alike
            times[mode].append(timed_update(policy, seqs, settings))
    real_tokens = sum(lengths)
    result: dict = {"sequences": len(lengths), "real_tokens": real_tokens}
    result["lengths"] = {"min": min(lengths), "median": statistics.median(lengths),
                         "max": max(lengths), "long": args.num_long}  # fmt: skip
    for mode, settings in modes.items():
        microbatches, computed = computed_tokens(seqs, settings)
        seconds = statistics.median(times[mode])
        result[mode] = {
            "microbatches": microbatches,
            "computed_tokens": computed,
            "median_seconds": seconds,
            "all_seconds": times[mode],
            "tokens_per_second": real_tokens / seconds,
        }
    result["token_budget"] = modes["packed"].batching.token_budget
    result["speedup"] = result["padded"]["median_seconds"] / result["packed"]["median_seconds"]
    return result


def release_process_group() -> None:
    import torch.distributed as dist
    from megatron.core import parallel_state

    parallel_state.destroy_model_parallel()
    if dist.is_initialized():
        dist.destroy_process_group()


# ---- end to end: the real trainer on the demo recipe -------------------------------------------


def run_trainer(args: argparse.Namespace, work: Path) -> Path:
    """`python -m oumi_megatron train` (1 process) on the demo recipe; returns metrics.jsonl."""
    from oumi_megatron.testing.tiny_models import build_tiny_model

    model_dir = build_tiny_model("llama", work / "tiny_llama_hf")
    output_dir = work / "run"
    command = [sys.executable, "-m", "oumi_megatron", "train", "-c", str(RECIPE),
               f"model.model_name={model_dir}", f"training.output_dir={output_dir}",
               f"training.max_steps={args.steps}", f"training.save_steps={args.save_steps}",
               "training.save_final_model=false", "training.enable_tensorboard=false"]  # fmt: skip
    # The update benchmark's process group set RANK, MASTER_PORT, ...: the child starts its own.
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_ENV}
    env.update(DO_NOT_TRACK="1", HF_HUB_OFFLINE="1", WANDB_MODE="offline")
    log = work / "train.log"
    with log.open("w") as out:
        done = subprocess.run(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-30:])
        raise RuntimeError(f"trainer exited with {done.returncode}:\n{tail}")
    return output_dir / "metrics.jsonl"


def phase_medians(metrics_jsonl: Path, save_steps: int) -> dict:
    """Median seconds per phase over steps 2..N; checkpoint over the steps that saved."""
    rows = [json.loads(line) for line in metrics_jsonl.read_text().splitlines() if line]
    steady = rows[1:] or rows
    result: dict = {"steps": len(rows)}
    for phase in PHASES:
        source = steady
        if phase == "checkpoint" and save_steps > 0:
            source = [r for r in rows if r["step"] % save_steps == 0] or steady
        result[f"time/{phase}"] = statistics.median(r[f"time/{phase}"] for r in source)
    result["perf/tokens_per_second"] = statistics.median(
        r["perf/tokens_per_second"] for r in steady
    )
    return result


# ---- report ----------------------------------------------------------------------------------


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"


def print_report(result: dict) -> None:
    pack = result["packing"]
    print(f"device: {result['device']}")
    print(f"update phase, {pack['sequences']} sequences, {pack['real_tokens']} real tokens, "
          f"lengths {pack['lengths']}, token budget {pack['token_budget']}:")  # fmt: skip
    for mode in ("padded", "packed"):
        m = pack[mode]
        print(f"  {mode}: {m['microbatches']} micro-batches, {m['computed_tokens']} tokens "
              f"computed, median {m['median_seconds']:.3f} s, "
              f"{m['tokens_per_second']:.0f} tokens/s")  # fmt: skip
    print(f"  packing speed-up over padding: {pack['speedup']:.2f}x")
    e2e = result.get("end_to_end")
    if e2e:
        print(f"end to end, demo recipe, 1 process, {e2e['steps']} steps (medians):")
        for phase in PHASES:
            print(f"  time/{phase}: {e2e[f'time/{phase}']:.4f} s")
        print(f"  perf/tokens_per_second: {e2e['perf/tokens_per_second']:.0f}")
    print(f"total benchmark time: {result['seconds']:.0f} s")


@contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send fd 1 to stderr while working: Megatron and Bridge log to stdout, which must hold
    only the report (or the one JSON line)."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--num-sequences", type=int, default=64)
    parser.add_argument("--num-long", type=int, default=6, help="long sequences in the batch")
    parser.add_argument("--min-len", type=int, default=16)
    parser.add_argument("--max-len", type=int, default=512)
    parser.add_argument("--micro-batch-size", type=int, default=8)
    parser.add_argument("--reps", type=int, default=3, help="timed updates per mode")
    parser.add_argument("--steps", type=int, default=10, help="end-to-end trainer steps")
    parser.add_argument("--save-steps", type=int, default=5)
    parser.add_argument("--skip-trainer", action="store_true", help="update benchmark only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="grpo_step_"))
    try:
        with stdout_to_stderr():
            result: dict = {"device": device_name(), "packing": packing_benchmark(args, work)}
            release_process_group()
            if not args.skip_trainer:
                metrics = run_trainer(args, work)
                result["end_to_end"] = phase_medians(metrics, args.save_steps)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["seconds"] = time.perf_counter() - start
    if args.json:
        print(json.dumps(result))
    else:
        print_report(result)


if __name__ == "__main__":
    main()

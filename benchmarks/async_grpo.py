"""One-step off-policy (async) GRPO against on-policy: throughput and learning, in one run.

    .venv/bin/python benchmarks/async_grpo.py [--steps 150] [--json out.json] [--plot out.png]

Both modes train the CPU demo (configs/recipes/tiny_grpo_cpu.yaml, its tiny Llama built if
missing) in one trainer process with one rollout process fed over gloo (disaggregated: the
process generates while the trainer updates when ``grpo.max_off_policy_steps: 1``), same seed,
same prompts. Reported per mode: median step time and tokens/s (the first ``--warmup`` steps
skipped), the time the trainer waited for the rollout (``time/rollout`` + ``time/rollout_wait``),
the weight sync (``time/sync``, bytes, and the seconds of export + send), the reward at the
start and end, and async's staleness and correction metrics; then the ratio async / on-policy of
tokens/s. The modes alternate (on-policy first), each in a fresh process.

On two GPUs, the trainer on the first and a vLLM rollout process on the second, fed over NCCL::

    python benchmarks/async_grpo.py --recipe configs/recipes/grpo-qwen2.5-1.5b-1n1g-tp1.yaml \
        --model <HF directory> --method nccl --steps 12 --warmup 2 \
        megatron.vllm_gpu_memory_utilization=0.6
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "configs/recipes/tiny_grpo_cpu.yaml"
MODES = {"on_policy": 0, "async": 1}


def _model(root: Path) -> Path:
    model = REPO / "runs/tiny_llama_hf"
    if not (model / "config.json").exists():
        model = root / "tiny_llama_hf"
        subprocess.run([sys.executable, "-m", "oumi_megatron.testing.tiny_models", "llama",
                        str(model)], check=True, cwd=REPO)  # fmt: skip
    return model


def _train(args: argparse.Namespace, model: Path, out: Path, off_policy: int) -> list[dict]:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node=1", "-m", "oumi_megatron",
               "train", "-c", str(args.recipe), f"model.model_name={model}",
               f"training.output_dir={out}", f"training.max_steps={args.steps}",
               f"megatron.weight_sync_method={args.method}", "megatron.rollout_workers=1",
               f"grpo.max_off_policy_steps={off_policy}", "training.enable_tensorboard=false",
               "megatron.overwrite_output_dir=true", *args.overrides]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"training failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _summary(rows: list[dict], warmup: int) -> dict:
    timed = rows[warmup:]

    def median(key: str) -> float:
        return statistics.median(r.get(key, 0.0) for r in timed)

    def mean_reward(part: list[dict]) -> float:
        return statistics.fmean(r["reward/mean"] for r in part)

    tenth = max(len(rows) // 10, 1)
    out = {
        "steps": len(rows),
        "step_s": median("time/step"),
        "tokens_per_s": median("perf/tokens_per_second"),
        "rollout_wait_s": median("time/rollout") + median("time/rollout_wait"),
        "update_s": median("time/update"),
        "sync_s": median("time/sync"),
        "sync_weights_s": median("sync/weights_s"),
        "sync_bytes": median("sync/bytes"),
        "reward_first_tenth": mean_reward(rows[:tenth]),
        "reward_last_tenth": mean_reward(rows[-tenth:]),
        "reward_curve": [r["reward/mean"] for r in rows],
    }
    for key in ("async/staleness", "rollout_correction/weight_mean",
                "rollout_correction/capped_token_frac", "mismatch/max_abs_logprob_diff"):  # fmt: skip
        if key in rows[-1]:
            out[key] = statistics.fmean(r[key] for r in timed)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--warmup", type=int, default=5, help="first steps left out of medians")
    parser.add_argument("--recipe", type=Path, default=RECIPE)
    parser.add_argument("--model", type=Path, help="HF directory (default: the demo's tiny Llama)")
    parser.add_argument("--method", choices=("gloo", "nccl"), default="gloo",
                        help="weight_sync_method of the rollout process")  # fmt: skip
    parser.add_argument("--json", type=Path)
    parser.add_argument("--plot", type=Path)
    parser.add_argument("overrides", nargs="*", help="extra key=value recipe overrides")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = args.model or _model(root)
        results = {}
        for mode, off_policy in MODES.items():
            rows = _train(args, model, root / mode, off_policy)
            results[mode] = _summary(rows, args.warmup)
            shown = {k: v for k, v in results[mode].items() if k != "reward_curve"}
            print(json.dumps({mode: shown}), flush=True)
    ratio = results["async"]["tokens_per_s"] / results["on_policy"]["tokens_per_s"]
    report = {"modes": results, "tokens_per_s_async_over_on_policy": ratio}
    print(json.dumps({"tokens_per_s_async_over_on_policy": round(ratio, 3)}))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    if args.plot:
        _plot(results, args.plot)


def _plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for mode, summary in results.items():
        curve = summary["reward_curve"]
        window = 10
        smooth = [
            statistics.fmean(curve[max(0, i - window + 1) : i + 1]) for i in range(len(curve))
        ]
        ax.plot(range(1, len(curve) + 1), smooth, label=mode.replace("_", "-"))
    ax.set_xlabel("step")
    ax.set_ylabel("reward/mean (10-step mean)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()

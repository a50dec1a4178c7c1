"""``oumi-megatron plan``: list layouts for a model on N GPUs, or check a recipe for N GPUs.

    oumi-megatron plan --model llama3.1-70b --gpus 16 [--gpus-per-node 8] [--gpu-memory 80GiB]
                       [--seq-len 4096] [--micro-batch 1] [--global-batch 256]
    oumi-megatron plan --check configs/recipes/grpo-llama3.1-70b-2n16g-tp8pp2.yaml --gpus 16

Planning reads only the model's config.json (no Oumi, Megatron or transformers import), so
it answers in about a second. ``--check`` runs the trainer's full config validation for that
world size (the errors ``oumi train`` would raise, all at once), then estimates the recipe's
memory per GPU and ranks its layout among the planned ones.
"""

from __future__ import annotations

import argparse
import os
import sys

from oumi_megatron.planner.hardware import Hardware, hardware


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="shipped name (llama3.1-70b), Hub id, or HF model dir")
    parser.add_argument("--check", metavar="RECIPE", help="check this recipe for --gpus GPUs")
    parser.add_argument("--gpus", type=int, required=True, help="total GPUs (world size)")
    parser.add_argument("--gpus-per-node", type=int, default=8)
    parser.add_argument("--gpu", default="h100", help="h100 (default), h200, a100 or b200")
    parser.add_argument("--gpu-memory", default=None, help="per GPU, e.g. 80GiB or 141GB")
    parser.add_argument("--seq-len", type=int, default=4096, help="prompt + completion tokens")
    parser.add_argument("--micro-batch", type=int, default=1, help="sequences per micro batch")
    parser.add_argument("--global-batch", type=int, default=256,
                        help="sequences per optimizer step")  # fmt: skip
    parser.add_argument("--rollout-share", type=float, default=0.3,
                        help="GPU memory fraction of a colocated vLLM engine while it generates "
                             "(0: rollout runs on other GPUs)")  # fmt: skip
    parser.add_argument("--rollout-tp", type=int, default=None,
                        help="GPUs per rollout engine (default: the fewest that hold the "
                             "weights in --rollout-share)")  # fmt: skip
    parser.add_argument("--kl", action="store_true", help="a reference model for the KL term")
    parser.add_argument("--top", type=int, default=10, help="valid layouts to list")
    parser.add_argument("--show-rejected", type=int, default=12, help="rejection reasons to list")
    parser.add_argument("overrides", nargs="*", help="with --check: dotted recipe overrides")


def run(args: argparse.Namespace) -> int:
    from oumi_megatron.planner.architecture import ArchitectureError

    try:
        hw = hardware(args.gpu, args.gpu_memory, args.gpus_per_node)
        if args.gpus < 1:
            raise ValueError(f"--gpus ({args.gpus}) must be at least 1")
        if args.check:
            return check_recipe(args.check, args.overrides, args.gpus, hw, args.model)
        if not args.model:
            raise ValueError("give --model (a shipped name, Hub id or model dir) or --check")
        return _plan(args, hw)
    except (ArchitectureError, ValueError) as error:
        print(f"oumi-megatron plan: {error}", file=sys.stderr)
        return 2


def _plan(args: argparse.Namespace, hw: Hardware) -> int:
    from oumi_megatron.planner.architecture import load_architecture
    from oumi_megatron.planner.memory import Workload
    from oumi_megatron.planner.report import render
    from oumi_megatron.planner.search import plan, rollout_tp_for

    arch = load_architecture(args.model)
    work = Workload(
        seq_len=args.seq_len, micro_batch=args.micro_batch, global_batch=args.global_batch,
        reference_model=args.kl, rollout_share=args.rollout_share,
        rollout_tp=args.rollout_tp or rollout_tp_for(arch, hw, args.rollout_share),
    )  # fmt: skip
    result = plan(arch, args.gpus, hw, work)
    print(render(result, top=args.top, show_rejected=args.show_rejected))
    return 0 if result.valid else 1


def check_recipe(
    recipe: str, overrides: list[str], gpus: int, hw: Hardware, model: str | None = None
) -> int:
    """Validates ``recipe`` for ``gpus`` GPUs and estimates its memory; 0 when it fits."""
    from oumi_megatron.config import ConfigError
    from oumi_megatron.planner.recipe import recipe_plan

    os.environ.setdefault("LOCAL_WORLD_SIZE", str(min(gpus, hw.gpus_per_node)))
    try:
        outcome = recipe_plan(recipe, overrides, gpus, hw, model)
    except ConfigError as error:
        print(f"{recipe}: not valid for {gpus} GPUs:\n{error}", file=sys.stderr)
        return 2
    print("\n".join(outcome.lines))
    return 0 if outcome.fits else 1

"""`oumi-megatron <command> -c cfg.yaml [dotted.overrides=...]`.

Run under torchrun for several ranks: `torchrun --nproc-per-node 2 -m oumi_megatron convert -c ...`.
Heavy imports (Oumi, Megatron, Bridge) happen inside the commands, so `--help` is instant.
"""

from __future__ import annotations

import argparse
import os
import sys

COMMANDS = {
    "train": "train with the recipe's trainer (MEGATRON_GRPO), then export output_dir/hf_model",
    "convert": "convert the HF checkpoint to output_dir/megatron_checkpoint (reused when current)",
    "verify": "convert (or reuse), compare Megatron logits with Hugging Face at the configured layout",
    "export": "write output_dir/hf_model from the converted checkpoint, or a training checkpoint",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="oumi-megatron", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        cmd.add_argument("-c", "--config", required=True, help="Oumi-style YAML recipe")
        cmd.add_argument("overrides", nargs="*", help="dotted overrides, e.g. training.max_steps=3")
        if name == "train":
            cmd.add_argument("--resume", default=None, help="checkpoint path or 'latest'")
        if name == "export":
            cmd.add_argument("--checkpoint", default=None,
                             help="step_N, 'latest' or a path under output_dir/checkpoints: "
                                  "export that training step to output_dir/hf_model_step_N")  # fmt: skip
            cmd.add_argument("--output", default=None, help="export directory instead")
        if name == "verify":
            cmd.add_argument("--tolerance", type=float, default=1e-5, help="max |Δ| allowed (fp32)")
            cmd.add_argument("--export", action="store_true", help="also export hf_model/")
    plan = sub.add_parser(
        "plan",
        help="list valid parallel layouts for a model on N GPUs, or check a recipe (--check)",
        description="Parallel layouts ranked by estimated step time, with memory per GPU.",
    )
    from oumi_megatron.planner.command import add_arguments

    add_arguments(plan)
    return parser


def oumi_style_overrides(argv: list[str]) -> list[str]:
    """``--a.b=c`` and ``--a.b c`` (Oumi's CLI forms) as ``a.b=c``, every override moved last
    (argparse takes the positional overrides in one run), other arguments unchanged.

    A flag is an override when its name has a dot (options like ``--resume`` have none).
    """
    arguments, overrides, rest = [], [], list(argv)
    while rest:
        arg = rest.pop(0)
        name = arg[2:].split("=", 1)[0] if arg.startswith("--") else ""
        if "." in name and "=" in arg:
            overrides.append(arg[2:])
        elif "." in name:
            if not rest or rest[0].startswith("--"):
                raise SystemExit(f"oumi-megatron: {arg} needs a value: {arg} VALUE or {arg}=VALUE")
            overrides.append(f"{name}={rest.pop(0)}")
        elif not arg.startswith("-") and "=" in arg and "." in arg.split("=", 1)[0]:
            overrides.append(arg)
        else:
            arguments.append(arg)
    return arguments + overrides


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(oumi_style_overrides(sys.argv[1:] if argv is None else argv))
    if args.command == "plan":  # reads JSON only: none of _run's heavy set-up
        from oumi_megatron.planner.command import run

        return run(args)
    return _run(args)


def run_command(command: str, config: str, overrides: list[str]) -> int:
    """``oumi-megatron <command> -c config overrides...`` from Python (``oumi train`` uses it)."""
    return main([command, "-c", config, *overrides])


def _run(args: argparse.Namespace) -> int:
    from oumi_megatron.console import setup_console

    setup_console()  # before the heavy imports below, whose warnings it filters
    from oumi_megatron.config import ConfigError
    from oumi_megatron.parallel.threads import set_default_threads
    from oumi_megatron.stops import EXIT_CONFIG, RunStopped

    set_default_threads()
    try:
        from oumi_megatron import commands

        return getattr(commands, args.command)(args)
    except ConfigError as error:
        if os.environ.get("RANK", "0") == "0":  # every rank finds the same problems
            print(f"oumi-megatron: configuration error: {error}", file=sys.stderr)
        return EXIT_CONFIG
    except RunStopped as error:
        if os.environ.get("RANK", "0") == "0":
            print(f"oumi-megatron: stopped: {error}", file=sys.stderr)
        return error.exit_code


if __name__ == "__main__":
    sys.exit(main())

"""`oumi-megatron <command> -c cfg.yaml [dotted.overrides=...]`.

Run under torchrun for several ranks: `torchrun --nproc-per-node 2 -m oumi_megatron convert -c ...`.
Heavy imports (Oumi, Megatron, Bridge) happen inside the commands, so `--help` is instant.
"""

from __future__ import annotations

import argparse
import logging
import sys

COMMANDS = {
    "train": "train with the recipe's trainer (MEGATRON_GRPO), then export output_dir/hf_model",
    "convert": "convert the HF checkpoint to output_dir/megatron_checkpoint (reused when current)",
    "verify": "convert (or reuse), compare Megatron logits with Hugging Face at the configured layout",
    "export": "write output_dir/hf_model from the converted Megatron checkpoint",
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
        if name == "verify":
            cmd.add_argument("--tolerance", type=float, default=1e-5, help="max |Δ| allowed (fp32)")
            cmd.add_argument("--export", action="store_true", help="also export hf_model/")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from oumi_megatron.config import ConfigError

    try:
        from oumi_megatron import commands

        return getattr(commands, args.command)(args)
    except ConfigError as error:
        print(f"oumi-megatron: configuration error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""Convert-once benchmark: first run converts HF → Megatron, later runs reuse the checkpoint.

    .venv/bin/python benchmarks/convert_once.py [--hidden 512 --layers 8] [--json]

Builds a random Llama-shaped checkpoint offline, then loads it three times into Megatron
(1 process, gloo) against the same `megatron_checkpoint/`. Prints the weights-phase seconds
of each run (convert = Bridge HF read + mapping + distributed save; reuse = distributed load)
and the ratio, measured in one process.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
from pathlib import Path


def build_model(directory: Path, hidden: int, layers: int, vocab: int) -> None:
    from oumi_megatron.testing.tiny_models import build_llama

    build_llama(directory, hidden, layers, vocab)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args()

    from oumi_megatron.model.bridge import load_megatron_model
    from oumi_megatron.parallel.layout import ParallelLayout
    from oumi_megatron.parallel.startup import init_distributed, init_model_parallel

    work = Path(tempfile.mkdtemp(prefix="convert_once_"))
    try:
        build_model(work / "hf", args.hidden, args.layers, args.vocab)
        init_distributed()
        init_model_parallel(ParallelLayout())
        runs = []
        for _ in range(args.runs):
            loaded = load_megatron_model(
                str(work / "hf"), work / "megatron_checkpoint", ParallelLayout()
            )
            runs.append(
                {"reused": loaded.reused_checkpoint, "weights_seconds": loaded.weights_seconds}
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    convert = runs[0]["weights_seconds"]
    reuse = statistics.median(r["weights_seconds"] for r in runs[1:])
    result = {
        "runs": runs,
        "convert_seconds": convert,
        "reuse_seconds": reuse,
        "speedup": convert / reuse,
    }
    if args.json:
        print(json.dumps(result))
        return
    for i, run in enumerate(runs):
        print(
            f"run {i}: {'reused' if run['reused'] else 'converted'} in {run['weights_seconds']:.3f} s"
        )
    print(f"reuse is {result['speedup']:.1f}× faster than converting")


if __name__ == "__main__":
    main()

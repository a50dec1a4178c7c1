"""One flat broadcast of a model's bytes, and the same bytes in buckets: the bound that the
disaggregated weight sync (trainer → rollout processes) is compared with.

    torchrun --standalone --nproc-per-node 2 benchmarks/nccl_broadcast.py \\
        --bytes 3087428608 [--bucket-mb 256] [--reps 10] [--json out.json]

Rank 0 broadcasts one uint8 buffer of ``--bytes`` to every other rank (NCCL with one GPU per
rank when CUDA is available, gloo on CPU), then the same bytes as one broadcast per
``--bucket-mb`` bucket. Each repetition is timed from a barrier to the slowest rank's end;
reported: median seconds and bytes / second of each way, and whether every rank received the
bytes sent (compared byte for byte after each repetition; the receivers' buffers are cleared
in between).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
import torch.distributed as dist

PATTERN = 251  # byte i holds i % 251 (a prime: a bucket landing at the wrong offset differs)


def _filled(num_bytes: int, device: torch.device) -> torch.Tensor:
    block = torch.arange(PATTERN, dtype=torch.uint8, device=device)
    return block.repeat(-(-num_bytes // PATTERN))[:num_bytes].contiguous()


def _timed(broadcast, device: torch.device) -> float:
    """Seconds of ``broadcast()`` from a barrier to the slowest rank's end."""
    dist.barrier()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    broadcast()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = torch.tensor([time.perf_counter() - start], dtype=torch.float64, device=device)
    dist.all_reduce(seconds, op=dist.ReduceOp.MAX)
    return float(seconds.item())


def _measure(
    buffer: torch.Tensor, expected: torch.Tensor, bucket_bytes: int | None, reps: int
) -> tuple[list[float], bool]:
    """Times of `reps` broadcasts of `buffer` from rank 0 (flat or in buckets), and whether
    every repetition arrived as `expected` on every rank."""
    receiver = dist.get_rank() != 0
    pieces = [buffer] if bucket_bytes is None else list(buffer.split(bucket_bytes))
    times, ok = [], True
    for _ in range(reps):
        if receiver:
            buffer.zero_()

        def broadcast() -> None:
            for piece in pieces:
                dist.broadcast(piece, src=0)

        times.append(_timed(broadcast, buffer.device))
        ok = ok and torch.equal(buffer, expected)
    every = torch.tensor([int(ok)], device=buffer.device)
    dist.all_reduce(every, op=dist.ReduceOp.MIN)
    return times, bool(every.item())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bytes", type=int, required=True, help="bytes to broadcast")
    parser.add_argument("--bucket-mb", type=float, default=256.0)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group("nccl" if cuda else "gloo")
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    expected = _filled(args.bytes, device)
    buffer = expected.clone() if dist.get_rank() == 0 else torch.empty_like(expected)
    bucket_bytes = max(int(args.bucket_mb * 2**20), 1)
    report: dict = {"bytes": args.bytes, "ranks": dist.get_world_size(),
                    "backend": dist.get_backend(), "bucket_bytes": bucket_bytes}  # fmt: skip
    if cuda:
        report["device"] = torch.cuda.get_device_name(device)
    for name, buckets in (("flat", None), ("buckets", bucket_bytes)):
        _measure(buffer, expected, buckets, args.warmup)
        times, ok = _measure(buffer, expected, buckets, args.reps)
        median = statistics.median(times)
        report[name] = {"median_s": median, "all_s": times, "GBps": args.bytes / median / 1e9,
                        "received_whole": ok}  # fmt: skip
    if dist.get_rank() == 0:
        print(json.dumps(report), flush=True)
        if args.json:
            args.json.write_text(json.dumps(report, indent=1))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

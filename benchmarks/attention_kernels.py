"""Attention kernels at the training step's shapes: forward + backward time and agreement.

    python3 benchmarks/attention_kernels.py [--json OUT] [--layers 28]

Qwen2.5-1.5B's attention (12 query heads, 2 K/V heads of 128, bf16, causal) on the two batches
of `benchmarks/train_step.py`: the GRPO-shaped one (skewed lengths, packed into micro-batches of
`--token-budget` tokens) and uniform rows (8 × 2,048 per micro-batch). Kernels, each where it
applies:

- ``fa2_varlen``: torch's flash varlen attention (`torch.nn.attention.varlen`), the packed path;
- ``fa4_varlen``: FlashAttention-4 (the ``flash-attn-4`` package) on the same packed rows, as
  the trainer calls it (`model.flash4`);
- ``sdpa``: `F.scaled_dot_product_attention(is_causal=True, enable_gqa=True)` on the
  [batch, heads, seq, dim] views of Megatron's [seq, batch, heads, dim] tensors (padded rows);
  ``sdpa_cudnn`` / ``sdpa_flash`` pin its backend;
- ``fa4_dense``: FlashAttention-4 on the same rows, read and written in Megatron's layout.

Times are CUDA-event medians over `--reps` after `--warmup` calls (the first FA4 call also
compiles its kernels: reported apart), per micro-batch set, and scaled to `--layers` layers.
Outputs and gradients are compared with the first kernel of each batch.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

HEADS, KV_HEADS, DIM = 12, 2, 128


def _train_step_module():
    path = Path(__file__).with_name("train_step.py")
    spec = importlib.util.spec_from_file_location("train_step_bench", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def packed_microbatches(lengths: list[int], budget: int) -> list[list[int]]:
    """Sequences in order, a new micro-batch whenever the next one would pass the budget."""
    batches, current = [], []
    for length in lengths:
        if current and sum(current) + length > budget:
            batches.append(current)
            current = []
        current.append(length)
    return batches + ([current] if current else [])


def qkv(tokens: int, batch: int | None, seed: int):
    """q, k, v with gradients: [tokens, heads, dim] (packed) or [seq, batch, heads, dim]."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    lead = (tokens,) if batch is None else (tokens, batch)
    made = [
        torch.randn(*lead, h, DIM, device="cuda", dtype=torch.bfloat16, generator=g)
        for h in (HEADS, KV_HEADS, KV_HEADS)
    ]
    return [t.requires_grad_() for t in made]


def fa2_varlen(q, k, v, cu, max_len):
    from torch.nn.attention.varlen import varlen_attn

    return varlen_attn(q, k, v, cu, cu, max_len, max_len, scale=DIM**-0.5, window_size=(-1, 0))


def fa4_varlen(q, k, v, cu, max_len):
    from oumi_megatron.model import flash4

    return flash4.varlen_attention(q, k, v, cu, max_len, DIM**-0.5)


def sdpa(q, k, v, backend=None):
    """Megatron layout [s, b, h, d] in, as our core attention calls SDPA."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    qt, kt, vt = (t.permute(1, 2, 0, 3) for t in (q, k, v))
    backends = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION}
    if backend is None:
        out = F.scaled_dot_product_attention(qt, kt, vt, is_causal=True, enable_gqa=True)
    else:
        with sdpa_kernel(backends[backend]):
            out = F.scaled_dot_product_attention(qt, kt, vt, is_causal=True, enable_gqa=True)
    return out.permute(2, 0, 1, 3)


def fa4_dense(q, k, v):
    """Megatron layout [s, b, h, d] in and out, as the trainer calls it (`model.flash4`)."""
    from oumi_megatron.model import flash4

    return flash4.dense_attention(q, k, v, DIM**-0.5)


def time_calls(fn, inputs, grads, warmup: int, reps: int) -> tuple[float, float]:
    """(first call's seconds, median seconds of one pass over every micro-batch)."""

    def one_pass():
        for (q, k, v, extra), grad in zip(inputs, grads, strict=True):
            out = fn(q, k, v, *extra)
            out.backward(grad)

    torch.cuda.synchronize()
    start = time.perf_counter()
    one_pass()
    torch.cuda.synchronize()
    first = time.perf_counter() - start
    for _ in range(warmup):
        one_pass()
    times = []
    for _ in range(reps):
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        one_pass()
        end.record()
        torch.cuda.synchronize()
        times.append(begin.elapsed_time(end) / 1000)
    return first, statistics.median(times)


def agreement(fn, reference, inputs, grads) -> dict:
    """Largest |Δ| of the output and of each input gradient against `reference`."""
    worst = {"out": 0.0, "dq": 0.0, "dk": 0.0, "dv": 0.0}
    for (q, k, v, extra), grad in zip(inputs, grads, strict=True):
        results = []
        for f in (reference, fn):
            leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
            out = f(*leaves, *extra)
            out.backward(grad)
            results.append([out.detach(), *(t.grad for t in leaves)])
        for name, a, b in zip(worst, *results, strict=True):
            worst[name] = max(worst[name], (a.float() - b.float()).abs().max().item())
    return worst


def attention_flops(lengths: list[int]) -> float:
    """Causal attention FLOPs of forward + backward (2.5× the forward's two matmuls)."""
    forward = sum(4 * n * n * DIM * HEADS / 2 for n in lengths)
    return 3.5 * forward


def run_batch(name, kernels, inputs, grads, lengths, args) -> dict:
    result = {"tokens": sum(lengths), "sequences": len(lengths), "kernels": {}}
    flops = attention_flops(lengths)
    reference = None
    for kernel_name, fn in kernels:
        try:
            first, seconds = time_calls(fn, inputs, grads, args.warmup, args.reps)
            entry = {
                "first_call_s": round(first, 3),
                "per_layer_s": seconds,
                "layers_s": seconds * args.layers,
                "tflops": flops / seconds / 1e12,
            }
            if reference is None:
                reference = fn
            else:
                entry["max_abs_diff_vs_first"] = agreement(fn, reference, inputs, grads)
        except Exception as error:  # noqa: BLE001 - report the kernel that cannot run, go on
            entry = {"error": f"{type(error).__name__}: {str(error)[:400]}"}
        result["kernels"][kernel_name] = entry
        print(name, kernel_name, json.dumps(entry), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--token-budget", type=int, default=16384)
    parser.add_argument("--uniform-length", type=int, default=2048)
    parser.add_argument("--rows", type=int, default=8, help="rows per uniform micro-batch")
    parser.add_argument("--uniform-microbatches", type=int, default=4)
    parser.add_argument("--layers", type=int, default=28)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    bench = _train_step_module()
    lengths_args = argparse.Namespace(
        uniform_length=0, prompts=8, generations=8, seed=0, min_prompt=64, max_prompt=256,
        max_completion=2048,
    )  # fmt: skip
    prompts, completions = bench.grpo_lengths(lengths_args)
    lengths = [p + c for p, c in zip(prompts, completions, strict=True)]
    packed_inputs, packed_grads = [], []
    for index, batch in enumerate(packed_microbatches(lengths, args.token_budget)):
        q, k, v = qkv(sum(batch), None, seed=index)
        cu = torch.tensor([0, *batch], device="cuda").cumsum(0).to(torch.int32)
        packed_inputs.append((q, k, v, (cu, max(batch))))
        packed_grads.append(torch.randn_like(q))
    packed = run_batch(
        "packed",
        [("fa2_varlen", fa2_varlen), ("fa4_varlen", fa4_varlen)],
        packed_inputs, packed_grads, lengths, args,
    )  # fmt: skip

    uniform_inputs, uniform_grads = [], []
    for index in range(args.uniform_microbatches):
        q, k, v = qkv(args.uniform_length, args.rows, seed=100 + index)
        uniform_inputs.append((q, k, v, ()))
        uniform_grads.append(torch.randn_like(q))
    uniform_lengths = [args.uniform_length] * (args.rows * args.uniform_microbatches)
    uniform = run_batch(
        "uniform",
        [
            ("sdpa", sdpa),
            ("sdpa_cudnn", lambda q, k, v: sdpa(q, k, v, "cudnn")),
            ("sdpa_flash", lambda q, k, v: sdpa(q, k, v, "flash")),
            ("fa4_dense", fa4_dense),
        ],
        uniform_inputs, uniform_grads, uniform_lengths, args,
    )  # fmt: skip
    report = {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "packed": packed,
        "uniform": uniform,
    }
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text)


if __name__ == "__main__":
    sys.exit(main())

"""The compiled layer's bandwidth-bound kernels alone, at the training step's shapes: the RoPE
with the q/k/v layout work, and the SwiGLU backward.

    python3 benchmarks/layer_kernels.py [--tokens 16384] [--rows 8] [--json OUT]

Qwen2.5-1.5B's shapes (12 query heads, 2 K/V heads of 128, MLP width 8,960; bf16), tokens in
rows of ``tokens / rows`` in Megatron's [seq, rows, ...] layout (8 rows of 2,048: the padded
micro-batch of the update; 1: a packed one). Each case runs under `torch.compile`; its time is
the GPU time of its kernels per call (profiler, median call of 20 after 5 warm-up calls),
beside the time its bytes take at the card's bandwidth (the floor).

RoPE (forward + backward): the fused q/k/v projection's output [seq, rows, groups,
(heads/groups + 2) · 128] is split as Megatron's `SelfAttention.get_query_key_value_tensors`
splits it and q and k are rotated:

- ``rope_freqs``: Megatron's `_apply_rotary_pos_emb_bshd`, cos and sin taken from the fp32
  angles in every layer;
- ``rope_cos_sin``: cos and sin given once per micro-batch (`model.rope.rotate_with_cos_sin`,
  the default);
- ``rope_swap``: the same rotation written without concatenations: the halves swapped by a
  flip of a [2, dim/2] view and the sign folded into sin (once per micro-batch).

SwiGLU backward (the input's gradient from the output's gradient and the saved input):

- ``swiglu_back_megatron``: Megatron's `swiglu_back` (its concatenation of the halves);
- ``swiglu_back_triton``: one Triton pass (`model.swiglu_backward`, the default).

The MLP's down projection forward (``x @ W.T``, [tokens, 8,960] · [8,960, 1,536]), whose cuBLAS
kernel zeroes memory first: GPU time of its GEMM kernels and of its memsets apart, with
torch's defaults (``fc2_default``), without reduced-precision reductions in bf16 GEMMs
(``fc2_no_reduced_precision``: ``allow_bf16_reduced_precision_reduction = False``) and through
cuBLASLt (``fc2_cublaslt``).

``--dump DIR`` writes the Triton source of every kernel the cases compiled into DIR.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics

import torch

HEADS, GROUPS, DIM, FFN = 12, 2, 128, 8960


def split_qkv(mixed: torch.Tensor):
    per_group = HEADS // GROUPS
    q, k, v = torch.split(mixed, [per_group * DIM, DIM, DIM], dim=3)
    return q.reshape(q.size(0), q.size(1), -1, DIM), k, v


def rope_freqs(mixed, freqs):
    from megatron.core.models.common.embeddings.rope_utils import _apply_rotary_pos_emb_bshd

    q, k, v = split_qkv(mixed)
    return _apply_rotary_pos_emb_bshd(q, freqs), _apply_rotary_pos_emb_bshd(k, freqs), v


def rope_cos_sin(mixed, cos_sin):
    from oumi_megatron.model.rope import rotate_with_cos_sin

    q, k, v = split_qkv(mixed)
    return rotate_with_cos_sin(q, cos_sin), rotate_with_cos_sin(k, cos_sin), v


def rope_swap(mixed, cos, signed_sin):
    def rotate(t):
        swapped = t.unflatten(-1, (2, DIM // 2)).flip(-2).flatten(-2)
        return t * cos + swapped * signed_sin

    q, k, v = split_qkv(mixed)
    return rotate(q), rotate(k), v


def device_seconds(fn, args, grads, warmup=5, reps=20, memsets: list | None = None) -> float:
    """Median over calls of the GPU time of one call's kernels (forward + backward); with
    ``memsets``, that of its memsets is appended to it."""
    from torch.profiler import ProfilerActivity, profile

    def once():
        outputs = fn(*args)
        if grads is not None:
            torch.autograd.backward(outputs, grads)

    for _ in range(warmup):
        once()
    torch.cuda.synchronize()
    per_call, zeroing = [], []
    for _ in range(reps):
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            once()
            torch.cuda.synchronize()
        kernels = [e for e in prof.events() if e.device_type.name == "CUDA"]
        per_call.append(sum(e.device_time_total for e in kernels) / 1e6)
        zeroing.append(sum(e.device_time_total for e in kernels if "Memset" in e.name) / 1e6)
    if memsets is not None:
        memsets.append(statistics.median(zeroing))
    return statistics.median(per_call)


def rope_cases(tokens: int, rows: int):
    seq = tokens // rows
    width = (HEADS // GROUPS + 2) * DIM
    mixed = torch.randn(seq, rows, GROUPS, width, device="cuda", dtype=torch.bfloat16)
    mixed.requires_grad_()
    positions = torch.arange(seq, device="cuda")
    inv = 1.0 / (1_000_000 ** (torch.arange(0, DIM, 2, device="cuda").float() / DIM))
    angles = torch.outer(positions.float(), inv)
    freqs = torch.cat((angles, angles), dim=-1).view(seq, 1, 1, DIM)
    from oumi_megatron.model.rope import cos_sin_of

    grads = [
        torch.randn(seq, rows, heads, DIM, device="cuda", dtype=torch.bfloat16)
        for heads in (HEADS, GROUPS, GROUPS)
    ]
    # Forward reads q, k and writes rotated copies; backward reads q's, k's and v's gradients
    # and writes the fused projection's.
    moved = 2 * tokens * (2 * (HEADS + GROUPS) * DIM + (HEADS + 2 * GROUPS) * DIM + width * GROUPS)
    cos, sin = angles.cos(), angles.sin()
    signed_sin = torch.cat((-sin, sin), dim=-1).view(seq, 1, 1, DIM).to(torch.bfloat16)
    cos = torch.cat((cos, cos), dim=-1).view(seq, 1, 1, DIM).to(torch.bfloat16)
    cases = [("rope_freqs", rope_freqs, (mixed, freqs)),
             ("rope_cos_sin", rope_cos_sin, (mixed, cos_sin_of(freqs))),
             ("rope_swap", rope_swap, (mixed, cos, signed_sin))]  # fmt: skip
    return cases, grads, moved


def swiglu_cases(tokens: int, rows: int):
    from oumi_megatron import patches
    from oumi_megatron.model.swiglu_backward import install_swiglu_backward, swiglu_back

    install_swiglu_backward()
    y = torch.randn(tokens // rows, rows, 2 * FFN, device="cuda", dtype=torch.bfloat16)
    g = torch.randn(tokens // rows, rows, FFN, device="cuda", dtype=torch.bfloat16)
    moved = 2 * tokens * FFN * (2 + 1 + 2)  # reads y and g, writes the gradient
    cases = [("swiglu_back_megatron", patches.remember("swiglu-backward"), (g, y)),
             ("swiglu_back_triton", swiglu_back, (g, y))]  # fmt: skip
    return cases, None, moved


def gemm_cases(tokens: int, rows: int):
    """The down projection's forward; ``moved`` here is its FLOPs (the floor at peak bf16)."""
    x = torch.randn(tokens, FFN, device="cuda", dtype=torch.bfloat16)
    weight = torch.randn(1536, FFN, device="cuda", dtype=torch.bfloat16) * FFN**-0.5
    matmuls = torch.backends.cuda.matmul

    def setting(reduced: bool, library: str):
        def fc2(x, weight):
            matmuls.allow_bf16_reduced_precision_reduction = reduced
            torch.backends.cuda.preferred_blas_library(library)
            return torch.matmul(x, weight.t())

        return fc2

    cases = [("fc2_default", setting(True, "cublas"), (x, weight)),
             ("fc2_no_reduced_precision", setting(False, "cublas"), (x, weight)),
             ("fc2_cublaslt", setting(True, "cublaslt"), (x, weight))]  # fmt: skip
    return cases, None, 2 * tokens * FFN * 1536


def measure(cases, grads, moved, bandwidth, compiled=True) -> dict:
    result, base = {}, None
    for name, fn, args in cases:
        run = torch.compile(fn, dynamic=False) if compiled else fn
        memsets = []
        seconds = device_seconds(run, args, grads, memsets=memsets)
        outputs = run(*args)
        outputs = [o.detach() for o in (outputs if isinstance(outputs, tuple) else (outputs,))]
        base = base or outputs
        diff = max((a.float() - b.float()).abs().max().item()
                   for a, b in zip(base, outputs, strict=True))  # fmt: skip
        result[name] = {"device_seconds": seconds, "floor_seconds": moved / bandwidth,
                        "x_floor": seconds * bandwidth / moved, "max_abs_diff": diff,
                        "memset_seconds": memsets[0]}  # fmt: skip
        print(name, json.dumps(result[name]), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=16384)
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--bandwidth", type=float, default=3.35e12, help="bytes/s of the card")
    parser.add_argument("--peak-flops", type=float, default=989e12, help="bf16 FLOP/s of the card")
    parser.add_argument("--json", default=None)
    parser.add_argument("--dump", default=None, help="write the compiled Triton kernels here")
    args = parser.parse_args()
    if args.dump:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = args.dump  # read when inductor first compiles
    result = {"tokens": args.tokens, "rows": args.rows}
    for build in (rope_cases, swiglu_cases):
        result.update(measure(*build(args.tokens, args.rows), args.bandwidth))
    result.update(measure(*gemm_cases(args.tokens, args.rows), args.peak_flops, compiled=False))
    torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = True
    torch.backends.cuda.preferred_blas_library("cublas")
    print(json.dumps(result, indent=1))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=1)


if __name__ == "__main__":
    main()

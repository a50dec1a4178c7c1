"""The compiled layer's RoPE and q/k/v layout work at the training step's shapes.

    python3 benchmarks/rope_kernel.py [--tokens 16384] [--json OUT]

Qwen2.5-1.5B's attention input (12 query heads, 2 K/V heads of 128, bf16): the fused q/k/v
projection's output [tokens, 1, groups, (heads/groups + 2) · 128] is split as Megatron's
`SelfAttention.get_query_key_value_tensors` splits it, and q and k are rotated with Megatron's
`_apply_rotary_pos_emb_bshd`, under `torch.compile`, forward + backward. Variants:

- ``freqs``: the rotation computes cos and sin from the [tokens, 1, 1, 128] fp32 angles, as
  Megatron's function does (in every layer);
- ``cos_sin``: cos and sin given, computed once per micro-batch ([tokens, 1, 2, 128] fp32, as
  `model.rope.per_token_frequencies` hands them to the layers).

Reports CUDA-event medians and the bytes each moves at the card's bandwidth (the floor).
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch

HEADS, GROUPS, DIM = 12, 2, 128


def split_qkv(mixed: torch.Tensor):
    per_group = HEADS // GROUPS
    q, k, v = torch.split(mixed, [per_group * DIM, DIM, DIM], dim=3)
    return q.reshape(q.size(0), q.size(1), -1, DIM), k, v


def with_freqs(mixed, freqs):
    from megatron.core.models.common.embeddings.rope_utils import _apply_rotary_pos_emb_bshd

    q, k, v = split_qkv(mixed)
    return _apply_rotary_pos_emb_bshd(q, freqs), _apply_rotary_pos_emb_bshd(k, freqs), v


def with_cos_sin(mixed, cos_sin):
    from oumi_megatron.model.rope import rotate_with_cos_sin

    q, k, v = split_qkv(mixed)
    return rotate_with_cos_sin(q, cos_sin), rotate_with_cos_sin(k, cos_sin), v


def timed(fn, args, grads, warmup=5, reps=20) -> float:
    def once():
        outputs = fn(*args)
        torch.autograd.backward(outputs, grads)

    for _ in range(warmup):
        once()
    times = []
    for _ in range(reps):
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        once()
        end.record()
        torch.cuda.synchronize()
        times.append(begin.elapsed_time(end) / 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=16384)
    parser.add_argument("--bandwidth", type=float, default=3.35e12, help="bytes/s of the card")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    t = args.tokens
    width = (HEADS // GROUPS + 2) * DIM
    mixed = torch.randn(t, 1, GROUPS, width, device="cuda", dtype=torch.bfloat16)
    mixed.requires_grad_()
    positions = torch.arange(t, device="cuda") % 2048
    inv = 1.0 / (1_000_000 ** (torch.arange(0, DIM, 2, device="cuda").float() / DIM))
    angles = torch.outer(positions.float(), inv)
    freqs = torch.cat((angles, angles), dim=-1).view(t, 1, 1, DIM)
    from oumi_megatron.model.rope import cos_sin_of

    cos_sin = cos_sin_of(freqs)  # as `model.rope` hands it to the layers
    grads = [
        torch.randn(t, 1, HEADS, DIM, device="cuda", dtype=torch.bfloat16),
        torch.randn(t, 1, GROUPS, DIM, device="cuda", dtype=torch.bfloat16),
        torch.randn(t, 1, GROUPS, DIM, device="cuda", dtype=torch.bfloat16),
    ]
    # Forward reads q, k (and writes rotated copies); backward reads their gradients and
    # writes the fused projection's gradient (v's included).
    moved = 2 * t * (2 * (HEADS + GROUPS) * DIM + (HEADS + GROUPS) * DIM * 2 + width * GROUPS)
    result = {"tokens": t, "floor_s": moved / args.bandwidth}
    base = None
    for name, fn, extra in (
        ("freqs", with_freqs, (freqs,)),
        ("cos_sin", with_cos_sin, (cos_sin,)),
    ):
        compiled = torch.compile(fn, dynamic=False)
        seconds = timed(compiled, (mixed, *extra), grads)
        outputs = [o.detach() for o in compiled(mixed, *extra)]
        if base is None:
            base = outputs
        result[name] = {
            "seconds": seconds,
            "x_floor": seconds / result["floor_s"],
            "max_abs_diff": max(
                (a.float() - b.float()).abs().max().item()
                for a, b in zip(base, outputs, strict=True)
            ),  # fmt: skip
        }
        print(name, json.dumps(result[name]), flush=True)
    print(json.dumps(result, indent=1))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=1)


if __name__ == "__main__":
    main()

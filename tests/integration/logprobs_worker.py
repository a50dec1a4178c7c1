"""torchrun worker: top-k/top-p log-probs, gradients and entropy with the vocabulary split over
the ranks (gloo), against one process holding the whole vocabulary.

Every rank builds the same logits, keeps its vocabulary slice, and rank 0 writes the largest
differences (values, gradients, entropy) to the JSON path given as argument.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from oumi_megatron.algorithms.logprobs import vocab_parallel_entropy, vocab_parallel_logprobs
from oumi_megatron.algorithms.truncation import apply_top_k_top_p

CASES = [  # (top_k, top_p, temperature, chunk_tokens): odd chunks exercise the padding
    (20, 0.9, 0.7, 3),
    (None, 0.8, 1.0, 4),
    (5, 1.0, 0.7, 1024),
]


def masked_reference(logits, temperature, top_k, top_p):
    scaled = logits / temperature
    kept = torch.isfinite(apply_top_k_top_p(scaled.detach(), top_k, top_p))
    return torch.log_softmax(scaled.masked_fill(~kept, float("-inf")), -1)


def run_case(top_k, top_p, temperature, chunk_tokens) -> dict:
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(7)  # the same logits, targets and weights on every rank
    full = (torch.randn(2, 9, 64) * 2).requires_grad_(True)
    reference = masked_reference(full, temperature, top_k, top_p)
    target = torch.distributions.Categorical(logits=reference.detach()).sample()
    weights = torch.randn(2, 9)
    width = full.shape[-1] // world
    local = full.detach()[..., rank * width : (rank + 1) * width].clone().requires_grad_(True)

    ours = vocab_parallel_logprobs(local, target, rank * width, temperature, dist.group.WORLD,
                                   chunk_tokens, top_k=top_k, top_p=top_p)  # fmt: skip
    (ours * weights).sum().backward()
    picked = reference.gather(-1, target.unsqueeze(-1))[..., 0]
    (picked * weights).sum().backward()
    entropy = vocab_parallel_entropy(local.detach(), rank * width, temperature, dist.group.WORLD,
                                     chunk_tokens, top_k=top_k, top_p=top_p)  # fmt: skip
    probs = reference.detach().exp()
    expected_entropy = -torch.where(probs > 0, probs * reference.detach(), 0.0).sum(-1)
    single = vocab_parallel_logprobs(full.detach(), target, 0, temperature, None, chunk_tokens,
                                     top_k=top_k, top_p=top_p)  # fmt: skip
    diffs = torch.tensor([
        (ours - picked).abs().max().item(),
        (local.grad - full.grad[..., rank * width : (rank + 1) * width]).abs().max().item(),
        (entropy - expected_entropy).abs().max().item(),
        (ours - single).abs().max().item(),
    ])  # fmt: skip
    dist.all_reduce(diffs, op=dist.ReduceOp.MAX)
    keys = ["logprob", "grad", "entropy", "vs_single_process"]
    return {
        "case": [top_k, top_p, temperature, chunk_tokens],
        **dict(zip(keys, diffs.tolist(), strict=True)),
    }


def main() -> None:
    dist.init_process_group("gloo")
    results = [run_case(*case) for case in CASES]
    if dist.get_rank() == 0:
        Path(sys.argv[1]).write_text(json.dumps(results, indent=1))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

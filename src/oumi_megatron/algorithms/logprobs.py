"""Log-probabilities and entropy of target tokens from vocab-parallel logits, in chunks.

Each tensor-parallel rank holds logits for a slice of the vocabulary. The full fp32 logits of a
batch (tokens × vocab × 4 bytes: 8 GB for 16k tokens of a 128k vocabulary) never exist: tokens
are processed in chunks, only the per-token log-sum-exp is kept, and backward recomputes each
chunk's softmax. Pure torch + torch.distributed (the TP group is passed in), no Megatron import.

With ``top_k``/``top_p`` the distribution is the truncated one the rollout engine samples from
(see ``algorithms/truncation.py``); without them the full-vocabulary path below runs.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from oumi_megatron.algorithms.truncation import (
    truncated_entropy,
    truncated_logprobs,
    truncation_active,
)

DEFAULT_CHUNK_TOKENS = 1024


def _all_reduce(tensor: torch.Tensor, op, group) -> torch.Tensor:
    if group is not None and dist.get_world_size(group) > 1:
        dist.all_reduce(tensor, op=op, group=group)
    return tensor


def _truncates(logits: torch.Tensor, vocab_start: int, group, top_k, top_p) -> bool:
    """Whether top-k/top-p apply; checks the vocabulary layout the row exchange relies on."""
    tp = dist.get_world_size(group) if group is not None else 1
    if not truncation_active(top_k, top_p, logits.shape[-1] * tp):
        return False
    rank = dist.get_rank(group) if group is not None else 0
    if vocab_start != rank * logits.shape[-1]:
        raise ValueError(
            f"top-k/top-p log-probs need equal vocabulary slices in TP-rank order; rank {rank} "
            f"holds {logits.shape[-1]} entries from {vocab_start}"
        )
    return True


def _chunk_lse_and_target(logits, target, vocab_start, temperature, group):
    """log-sum-exp over the full vocabulary and the target's (tempered) logit, for one chunk."""
    scaled = logits.float() / temperature
    local_max = scaled.max(dim=-1).values
    global_max = _all_reduce(local_max.clone(), dist.ReduceOp.MAX, group)
    sum_exp = torch.exp(scaled - global_max.unsqueeze(-1)).sum(dim=-1)
    lse = torch.log(_all_reduce(sum_exp, dist.ReduceOp.SUM, group)) + global_max
    local_ids = target - vocab_start
    owned = (local_ids >= 0) & (local_ids < logits.shape[-1])
    picked = scaled.gather(-1, local_ids.clamp(0, logits.shape[-1] - 1).unsqueeze(-1)).squeeze(-1)
    target_logit = _all_reduce(torch.where(owned, picked, 0.0), dist.ReduceOp.SUM, group)
    return lse, target_logit, scaled, owned, local_ids


class _ChunkedVocabParallelLogprob(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, target, vocab_start, temperature, group, chunk_tokens):
        logprobs = torch.empty(target.shape, dtype=torch.float32, device=logits.device)
        lse_all = torch.empty_like(logprobs)
        for start in range(0, target.shape[0], chunk_tokens):
            end = start + chunk_tokens
            lse, target_logit, *_ = _chunk_lse_and_target(
                logits[start:end], target[start:end], vocab_start, temperature, group
            )
            logprobs[start:end] = target_logit - lse
            lse_all[start:end] = lse
        ctx.save_for_backward(logits, target, lse_all)
        ctx.vocab_start, ctx.temperature, ctx.chunk_tokens = vocab_start, temperature, chunk_tokens
        return logprobs

    @staticmethod
    def backward(ctx, grad_output):
        logits, target, lse_all = ctx.saved_tensors
        grad_logits = torch.empty_like(logits)
        vocab_size_local = logits.shape[-1]
        for start in range(0, target.shape[0], ctx.chunk_tokens):
            end = start + ctx.chunk_tokens
            scaled = logits[start:end].float() / ctx.temperature
            probs = torch.exp(scaled - lse_all[start:end].unsqueeze(-1))
            grad = -probs * grad_output[start:end].unsqueeze(-1)
            local_ids = target[start:end] - ctx.vocab_start
            owned = (local_ids >= 0) & (local_ids < vocab_size_local)
            rows = torch.nonzero(owned).squeeze(-1)
            grad[rows, local_ids[rows]] += grad_output[start:end][rows]
            grad_logits[start:end] = (grad / ctx.temperature).to(logits.dtype)
        return grad_logits, None, None, None, None, None


def vocab_parallel_logprobs(
    logits: torch.Tensor,
    target: torch.Tensor,
    vocab_start: int = 0,
    temperature: float = 1.0,
    group=None,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
    top_k: int | None = None,
    top_p: float = 1.0,
) -> torch.Tensor:
    """log softmax(logits / temperature)[target] for each token, differentiable.

    `logits` is [..., V_local] (this rank's vocabulary slice starting at `vocab_start`),
    `target` has the leading shape of `logits`. Returns fp32 log-probs of that shape.
    With `top_k` (None or <= 0: off) / `top_p` (1: off), the softmax is over the tokens kept by
    vLLM's top-k/top-p rules (renormalised); a target outside that set gets -inf.
    """
    lead_shape = target.shape
    flat_logits = logits.reshape(-1, logits.shape[-1])
    flat_target = target.reshape(-1)
    if _truncates(logits, vocab_start, group, top_k, top_p):
        logprobs = truncated_logprobs(
            flat_logits, flat_target, float(temperature), top_k, top_p, group, chunk_tokens
        )
        return logprobs.reshape(lead_shape)
    logprobs = _ChunkedVocabParallelLogprob.apply(
        flat_logits, flat_target, vocab_start, float(temperature), group, chunk_tokens
    )
    return logprobs.reshape(lead_shape)


@torch.no_grad()
def vocab_parallel_entropy(
    logits: torch.Tensor,
    vocab_start: int = 0,
    temperature: float = 1.0,
    group=None,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
    top_k: int | None = None,
    top_p: float = 1.0,
) -> torch.Tensor:
    """Entropy of softmax(logits / temperature) per token (a metric: no gradient).

    With `top_k`/`top_p`, of the truncated distribution (as :func:`vocab_parallel_logprobs`).
    """
    flat = logits.reshape(-1, logits.shape[-1])
    if _truncates(logits, vocab_start, group, top_k, top_p):
        entropy = truncated_entropy(flat, float(temperature), top_k, top_p, group, chunk_tokens)
        return entropy.reshape(logits.shape[:-1])
    entropy = torch.empty(flat.shape[0], dtype=torch.float32, device=logits.device)
    dummy_target = torch.full((flat.shape[0],), vocab_start, device=logits.device)
    for start in range(0, flat.shape[0], chunk_tokens):
        end = start + chunk_tokens
        lse, _, scaled, *_ = _chunk_lse_and_target(
            flat[start:end], dummy_target[start:end], vocab_start, temperature, group
        )
        probs = torch.exp(scaled - lse.unsqueeze(-1))
        expected_logit = _all_reduce((probs * scaled).sum(-1), dist.ReduceOp.SUM, group)
        entropy[start:end] = lse - expected_logit
    return entropy.reshape(logits.shape[:-1])


# Largest |trainer - engine| log-prob of the old policy over a micro-batch's completion tokens;
# reduces with max (the "/max" suffix, see `grpo.metric_reduce_op`).
ROLLOUT_GAP = "mismatch/abs_logprob_diff/max"


def max_logprob_gap(
    trainer: torch.Tensor, rollout: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """max |trainer - rollout| over ``mask`` (-inf if empty). Tokens outside the trainer's
    top-k/top-p set (log-prob -inf) are counted by ``mismatch/outside_kept_frac`` instead."""
    trainer = trainer.detach().float()
    kept = mask.bool() & ~torch.isneginf(trainer)
    gap = (trainer - rollout.float()).abs()
    return torch.where(kept, gap, torch.full_like(gap, float("-inf"))).amax()

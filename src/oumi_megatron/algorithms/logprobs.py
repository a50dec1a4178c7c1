"""Log-probabilities and entropy of target tokens from vocab-parallel logits, in chunks.

Each tensor-parallel rank holds logits for a slice of the vocabulary. The full fp32 logits of a
batch (tokens × vocab × 4 bytes: 8 GB for 16k tokens of a 128k vocabulary) never exist: tokens
are processed in chunks, only the per-token log-sum-exp is kept, and backward recomputes each
chunk's softmax. Pure torch + torch.distributed (the TP group is passed in), no Megatron import.

With ``top_k``/``top_p`` the distribution is the truncated one the rollout engine samples from
(see ``algorithms/truncation.py``); without them the full-vocabulary path below runs.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from oumi_megatron.algorithms.truncation import (
    truncated_entropy,
    truncated_logprobs,
    truncation_active,
)

logger = logging.getLogger(__name__)

DEFAULT_CHUNK_TOKENS = 1024
# Compile the chunk functions on GPU (default; "0" keeps them eager; always eager on CPU):
# 1.24x faster GRPO updates on an H100 (docs/benchmarks.md, 2026-12-06).
COMPILE_ENV = "OUMI_MEGATRON_COMPILE_LOGPROBS"
_COMPILED: dict = {}


def fused(fn, like: torch.Tensor):
    """``fn`` under `torch.compile` for CUDA tensors unless ``OUMI_MEGATRON_COMPILE_LOGPROBS=0``
    (one fused kernel per chunk instead of ~8 passes over a tokens × vocabulary block); ``fn``
    itself otherwise, on CPU, or if compiling fails (logged once)."""
    if not like.is_cuda or os.environ.get(COMPILE_ENV, "1") == "0":
        return fn
    if fn not in _COMPILED:
        # Automatic dynamic shapes: only the token count varies between calls; the vocabulary
        # stays a constant the kernels index with.
        compiled = torch.compile(fn)

        def guarded(*args):
            if _COMPILED.get(fn) is fn:
                return fn(*args)
            try:
                return compiled(*args)
            except Exception as err:  # noqa: BLE001 - any compiler failure: stay correct
                logger.warning("log-prob kernels run uncompiled (%s: %s)", type(err).__name__, err)
                _COMPILED[fn] = fn
                return fn(*args)

        _COMPILED[fn] = guarded
    return _COMPILED[fn]


def _several(group) -> bool:
    """The vocabulary is split over more than one rank of ``group``."""
    return group is not None and dist.get_world_size(group) > 1


def _all_reduce(tensor: torch.Tensor, op, group) -> torch.Tensor:
    if _several(group):
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


def _chunk_sums(logits, shift, target_ids, owned, temperature):
    """For one chunk: Σ exp(s - shift), Σ exp(s - shift)·s and the target's s, where
    s = logits / temperature (fp32). One read of the logits: fused when compiled."""
    scaled = logits.float() / temperature
    weights = torch.exp(scaled - shift.unsqueeze(-1))
    picked = scaled.gather(-1, target_ids.unsqueeze(-1)).squeeze(-1)
    return weights.sum(-1), (weights * scaled).sum(-1), torch.where(owned, picked, 0.0)


def _chunk_shift(logits, temperature):
    """The chunk's largest s per token: max(x) / T = max(x / T) for T > 0, no fp32 copy."""
    return logits.max(dim=-1).values.float() / temperature


def _chunk_shift_sums(logits, target_ids, owned, temperature):
    """:func:`_chunk_shift` and :func:`_chunk_sums` of one chunk, as one function to compile
    (one kernel, instead of an eager pass for the max and a compiled one for the sums)."""
    shift = _chunk_shift(logits, temperature)
    return (shift, *_chunk_sums(logits, shift, target_ids, owned, temperature))


def _chunk_grad(logits, lse, grad_out, target_ids, owned, temperature):
    """d log p(target) / d logits · grad_out for one chunk: (onehot - p)·g / temperature."""
    scaled = logits.float() / temperature
    probs = torch.exp(scaled - lse.unsqueeze(-1))
    vocab = torch.arange(logits.shape[-1], device=logits.device)
    hit = (vocab.unsqueeze(0) == target_ids.unsqueeze(-1)) & owned.unsqueeze(-1)
    grad = (hit.to(probs.dtype) - probs) * grad_out.unsqueeze(-1)
    return (grad / temperature).to(logits.dtype)


def _chunk_grad_into(out, logits, lse, grad_out, target_ids, owned, temperature):
    """:func:`_chunk_grad` written into ``out`` (compiled: by the kernel itself, no copy)."""
    out.copy_(_chunk_grad(logits, lse, grad_out, target_ids, owned, temperature))


def _chunk_grad_over(logits, lse, grad_out, target_ids, owned, temperature):
    """:func:`_chunk_grad` written over ``logits`` (each element read, then its gradient
    written, by one kernel when compiled)."""
    logits.copy_(_chunk_grad(logits, lse, grad_out, target_ids, owned, temperature))


def _chunk_stats(logits, target, vocab_start, temperature, group):
    """(log-sum-exp, target logit, expected logit) of the tempered distribution over the full
    vocabulary, for one chunk of tokens."""
    local_ids = target - vocab_start
    owned = (local_ids >= 0) & (local_ids < logits.shape[-1])
    target_ids = local_ids.clamp(0, logits.shape[-1] - 1)
    if _several(group):
        shift = _all_reduce(_chunk_shift(logits, temperature), dist.ReduceOp.MAX, group)
        sum_exp, sum_weighted, target_logit = fused(_chunk_sums, logits)(
            logits, shift, target_ids, owned, temperature
        )
    else:
        # The whole vocabulary here: the max and the sums in one compiled function.
        shift, sum_exp, sum_weighted, target_logit = fused(_chunk_shift_sums, logits)(
            logits, target_ids, owned, temperature
        )
    sums = _all_reduce(torch.stack([sum_exp, sum_weighted, target_logit]), dist.ReduceOp.SUM, group)
    lse = torch.log(sums[0]) + shift
    return lse, sums[2], sums[1] / sums[0]


class _ChunkedVocabParallelLogprob(torch.autograd.Function):
    """log p(target) per token (differentiable) and, from the same pass, the entropy (not)."""

    @staticmethod
    def forward(ctx, logits, target, vocab_start, temperature, group, chunk_tokens, overwrite):
        logprobs = torch.empty(target.shape, dtype=torch.float32, device=logits.device)
        lse_all, entropy = torch.empty_like(logprobs), torch.empty_like(logprobs)
        for start in range(0, target.shape[0], chunk_tokens):
            end = start + chunk_tokens
            lse, target_logit, expected = _chunk_stats(
                logits[start:end], target[start:end], vocab_start, temperature, group
            )
            logprobs[start:end] = target_logit - lse
            lse_all[start:end] = lse
            entropy[start:end] = lse - expected
        ctx.save_for_backward(logits, target, lse_all)
        ctx.vocab_start, ctx.temperature, ctx.chunk_tokens = vocab_start, temperature, chunk_tokens
        ctx.overwrite = overwrite
        ctx.mark_non_differentiable(entropy)
        return logprobs, entropy

    @staticmethod
    def backward(ctx, grad_output, _grad_entropy):
        logits, target, lse_all = ctx.saved_tensors
        # Overwriting: the gradient takes the logits' own memory (each chunk is read before
        # it is written), so no second tokens × vocabulary block is allocated.
        grad_logits = logits if ctx.overwrite else torch.empty_like(logits)
        write = fused(_chunk_grad_over if ctx.overwrite else _chunk_grad_into, logits)
        for start in range(0, target.shape[0], ctx.chunk_tokens):
            end = start + ctx.chunk_tokens
            local_ids = target[start:end] - ctx.vocab_start
            owned = (local_ids >= 0) & (local_ids < logits.shape[-1])
            args = (logits[start:end], lse_all[start:end], grad_output[start:end],
                    local_ids.clamp(0, logits.shape[-1] - 1), owned, ctx.temperature)  # fmt: skip
            if ctx.overwrite:
                write(*args)
            else:
                write(grad_logits[start:end], *args)
        return grad_logits, None, None, None, None, None, None


def vocab_parallel_logprobs(
    logits: torch.Tensor,
    target: torch.Tensor,
    vocab_start: int = 0,
    temperature: float = 1.0,
    group=None,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
    top_k: int | None = None,
    top_p: float = 1.0,
    with_entropy: bool = False,
    overwrite_logits: bool = False,
):
    """log softmax(logits / temperature)[target] for each token, differentiable.

    `logits` is [..., V_local] (this rank's vocabulary slice starting at `vocab_start`),
    `target` has the leading shape of `logits`. Returns fp32 log-probs of that shape.
    With `top_k` (None or <= 0: off) / `top_p` (1: off), the softmax is over the tokens kept by
    vLLM's top-k/top-p rules (renormalised); a target outside that set gets -inf.
    ``with_entropy``: also return the entropy of that distribution per token (no gradient),
    from the same pass over the logits on the full-vocabulary path.
    ``overwrite_logits``: the backward pass writes the logits' gradient over ``logits`` itself
    on the full-vocabulary path (no second tokens × vocabulary block); for logits that nothing
    reads after the backward. Another autograd use of the same logits then fails loudly
    (torch's check of tensors modified in place), never silently.
    """
    flat_logits, order = _token_rows(logits)
    flat_target = order.flatten(target)
    if _truncates(logits, vocab_start, group, top_k, top_p):
        logprobs = order.restore(
            truncated_logprobs(
                flat_logits, flat_target, float(temperature), top_k, top_p, group, chunk_tokens
            )
        )
        if not with_entropy:
            return logprobs
        entropy = truncated_entropy(
            flat_logits.detach(), float(temperature), top_k, top_p, group, chunk_tokens
        )
        return logprobs, order.restore(entropy)
    logprobs, entropy = _ChunkedVocabParallelLogprob.apply(
        flat_logits, flat_target, vocab_start, float(temperature), group, chunk_tokens,
        overwrite_logits,
    )  # fmt: skip
    if with_entropy:
        return order.restore(logprobs), order.restore(entropy)
    return order.restore(logprobs)


@dataclass(frozen=True)
class _TokenOrder:
    """The order in which :func:`_token_rows` reads tokens: batch-first, or sequence-first
    for [B, S, V] logits that are a transposed view of [S, B, V] memory."""

    shape: torch.Size  # logits.shape[:-1]
    seq_first: bool

    def flatten(self, values: torch.Tensor) -> torch.Tensor:
        """Per-position values shaped like ``logits[..., 0]``, flat in the rows' order."""
        return (values.transpose(0, 1) if self.seq_first else values).reshape(-1)

    def restore(self, flat: torch.Tensor) -> torch.Tensor:
        """Per-row values laid out like ``logits[..., 0]`` again."""
        if self.seq_first:
            return flat.reshape(self.shape[1], self.shape[0]).transpose(0, 1)
        return flat.reshape(self.shape)


def _token_rows(logits: torch.Tensor) -> tuple[torch.Tensor, _TokenOrder]:
    """``logits`` [..., V] as one row per token, without a copy where the memory allows.

    [B, S, V] logits that are a transposed view of sequence-first [S, B, V] memory (Megatron's
    own layout, see `training.policy.sequence_first_logits`) are read in that order: a copy
    into batch-first order would move the whole tokens × vocabulary block twice per step.
    """
    seq_first = (
        logits.dim() == 3 and not logits.is_contiguous() and logits.transpose(0, 1).is_contiguous()
    )
    memory = logits.transpose(0, 1) if seq_first else logits
    return memory.reshape(-1, logits.shape[-1]), _TokenOrder(logits.shape[:-1], seq_first)


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
    flat, order = _token_rows(logits)
    if _truncates(logits, vocab_start, group, top_k, top_p):
        return order.restore(
            truncated_entropy(flat, float(temperature), top_k, top_p, group, chunk_tokens)
        )
    entropy = torch.empty(flat.shape[0], dtype=torch.float32, device=logits.device)
    target = torch.full((flat.shape[0],), vocab_start, device=logits.device)
    for start in range(0, flat.shape[0], chunk_tokens):
        end = start + chunk_tokens
        lse, _, expected = _chunk_stats(
            flat[start:end], target[start:end], vocab_start, temperature, group
        )
        entropy[start:end] = lse - expected
    return order.restore(entropy)


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

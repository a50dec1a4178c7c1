"""Logit processing and sampling with vLLM's semantics, in plain torch.

Mirrors vLLM's V1 sampler (``apply_top_k_top_p_pytorch`` + ``processed_logprobs``) so that the
torch engine and the vLLM engine return the same quantity for the same logits.
"""

from __future__ import annotations

import torch

from oumi_megatron.rollout.base import SamplingParams


def apply_top_k_top_p(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Set logits outside the top-k / top-p set to -inf (returns a new tensor).

    Same rules as vLLM: top-k keeps every token whose logit is >= the k-th largest (ties
    kept); top-p then drops, from the least likely up, tokens whose cumulative probability
    (renormalised after top-k) is <= 1 - p, always keeping the most likely token.
    """
    vocab = logits.shape[-1]
    use_k = 0 < top_k < vocab
    use_p = top_p < 1.0
    if not (use_k or use_p):
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=False)
    if use_k:
        kth_largest = sorted_logits[..., vocab - top_k : vocab - top_k + 1]
        sorted_logits = sorted_logits.masked_fill(sorted_logits < kth_largest, float("-inf"))
    if use_p:
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop = cumulative <= 1.0 - top_p
        drop[..., -1] = False  # the most likely token always survives
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
    return torch.empty_like(sorted_logits).scatter_(-1, order, sorted_logits)


def processed_logits(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """fp32 logits of the distribution actually sampled: /T, then top-k/top-p masking.

    Greedy (T == 0) applies neither, like vLLM (which resets top_k/top_p for greedy).
    """
    logits = logits.float()
    if params.greedy:
        return logits
    return apply_top_k_top_p(logits / params.temperature, params.top_k, params.top_p)


def processed_logprobs(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """``log_softmax`` of :func:`processed_logits` (vLLM's "processed_logprobs")."""
    return torch.log_softmax(processed_logits(logits, params), dim=-1)


def sample_next(
    logprobs: torch.Tensor, params: SamplingParams, generators: list[torch.Generator]
) -> torch.Tensor:
    """Draw one token per row of ``logprobs`` [rows, vocab] (row i uses ``generators[i]``).

    One generator per sequence makes a completion independent of what else is in the batch
    (batch size, other prompts): it depends only on the seed and its (prompt, sample) index.
    """
    if params.greedy:
        return logprobs.argmax(dim=-1)
    probs = logprobs.exp()
    picks = [torch.multinomial(probs[i], 1, generator=generators[i]) for i in range(probs.shape[0])]
    return torch.cat(picks)

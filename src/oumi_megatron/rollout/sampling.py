"""Logit processing and sampling with vLLM's semantics, in plain torch.

Mirrors vLLM's V1 sampler (``apply_top_k_top_p_pytorch`` + ``processed_logprobs``) so that the
torch engine and the vLLM engine return the same quantity for the same logits. The mask itself
lives in ``algorithms/truncation.py``: the trainer applies the same one to its log-probs.
"""

from __future__ import annotations

import torch

from oumi_megatron.algorithms.truncation import apply_top_k_top_p
from oumi_megatron.rollout.base import SamplingParams

__all__ = ["apply_top_k_top_p", "processed_logits", "processed_logprobs", "sample_next"]


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

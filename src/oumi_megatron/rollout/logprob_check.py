"""Compare rollout logprobs with a recompute (trainer or HF teacher-forced forward).

The metric itself is :func:`oumi_megatron.algorithms.token_mult_prob_error`; this module only
pads :class:`RolloutSample` lists into tensors and provides an HF reference recompute.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from oumi_megatron.algorithms import token_mult_prob_error
from oumi_megatron.rollout.base import RolloutSample, SamplingParams
from oumi_megatron.rollout.sampling import processed_logprobs

__all__ = [
    "pad_logprobs",
    "rollout_logprob_error",
    "teacher_forced_logprobs",
    "token_mult_prob_error",
]


def pad_logprobs(
    logprobs: Sequence[Sequence[float] | torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad per-sample logprob lists into ``[num_samples, max_len]`` values and mask."""
    width = max((len(lp) for lp in logprobs), default=0)
    values = torch.zeros(len(logprobs), width, dtype=torch.float32)
    mask = torch.zeros(len(logprobs), width, dtype=torch.bool)
    for row, lp in enumerate(logprobs):
        values[row, : len(lp)] = torch.as_tensor(lp, dtype=torch.float32).cpu()
        mask[row, : len(lp)] = True
    return values, mask


def rollout_logprob_error(
    samples: Sequence[RolloutSample], trainer_logprobs: Sequence[Sequence[float] | torch.Tensor]
) -> torch.Tensor:
    """``token_mult_prob_error`` of the samples' rollout logprobs vs the trainer's (1 = equal)."""
    rollout, mask = pad_logprobs([s.completion_logprobs for s in samples])
    trainer, trainer_mask = pad_logprobs(trainer_logprobs)
    if not torch.equal(mask, trainer_mask):
        raise ValueError("trainer and rollout logprobs have different completion lengths")
    return token_mult_prob_error(trainer, rollout, mask)


@torch.no_grad()
def teacher_forced_logprobs(
    model: torch.nn.Module, samples: Sequence[RolloutSample], params: SamplingParams
) -> list[torch.Tensor]:
    """Processed logprobs of each completion from one plain full forward per sample.

    The reference the rollout engines must match: logits at positions prompt_len - 1 ...
    -2 predict the completion tokens; the same temperature / top-k / top-p processing as
    sampling is applied.
    """
    device = next(model.parameters()).device
    out = []
    for sample in samples:
        ids = torch.tensor([sample.prompt_ids + sample.completion_ids], device=device)
        logits = model(input_ids=ids).logits[0]
        start = len(sample.prompt_ids) - 1
        logprobs = processed_logprobs(logits[start : start + len(sample.completion_ids)], params)
        target = torch.tensor(sample.completion_ids, device=device)[:, None]
        out.append(logprobs.gather(-1, target)[:, 0].cpu())
    return out

"""Group-relative advantages for GRPO and Dr.GRPO (pure torch)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

AdvantageEstimator = Literal["grpo", "dr_grpo"]

# TRL's GRPOTrainer adds this to the group std before dividing.
DEFAULT_STD_EPS = 1e-4


@dataclass(frozen=True)
class GroupAdvantages:
    """Advantages plus per-group statistics for logging.

    Attributes:
        advantages: [num_prompts * num_generations], one value per completion.
        group_mean: [num_prompts] mean reward of each group.
        group_std: [num_prompts] unbiased (Bessel-corrected) std of each group.
        zero_std: [num_prompts] bool, True where all rewards in the group are equal.
        frac_zero_std: scalar, fraction of groups with zero std (no learning signal).
    """

    advantages: torch.Tensor
    group_mean: torch.Tensor
    group_std: torch.Tensor
    zero_std: torch.Tensor
    frac_zero_std: torch.Tensor


def compute_group_advantages(
    rewards: torch.Tensor,
    num_generations: int,
    estimator: AdvantageEstimator = "grpo",
    scale_rewards: bool = True,
    eps: float = DEFAULT_STD_EPS,
) -> GroupAdvantages:
    """Turn rewards of contiguous groups into group-relative advantages.

    Args:
        rewards: [num_prompts * num_generations]; completions of one prompt are contiguous.
        num_generations: group size G (>= 2; the unbiased std is undefined for G = 1).
        estimator: ``"grpo"``: ``(r - mean) / (std + eps)`` (or ``r - mean`` when
            ``scale_rewards`` is False); ``"dr_grpo"``: ``r - mean``, always unscaled.
        scale_rewards: divide by the group std (TRL's ``scale_rewards``); grpo only.
        eps: added to the std before dividing.

    Groups whose rewards are all equal get advantage exactly 0.
    """
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D, got shape {tuple(rewards.shape)}")
    if num_generations < 2:
        raise ValueError(f"num_generations must be >= 2, got {num_generations}")
    if rewards.numel() % num_generations != 0:
        raise ValueError(
            f"{rewards.numel()} rewards is not a multiple of num_generations={num_generations}"
        )
    if estimator not in ("grpo", "dr_grpo"):
        raise ValueError(f"unknown advantage estimator {estimator!r}")

    # Low-precision rewards would make the mean/std noisy; never go below fp32.
    dtype = torch.promote_types(rewards.dtype, torch.float32)
    grouped = rewards.detach().to(dtype).view(-1, num_generations)
    mean = grouped.mean(dim=1, keepdim=True)
    # torch.std default is unbiased (correction=1), matching TRL.
    std = grouped.std(dim=1, keepdim=True)
    # Exact equality rather than isclose(std, 0): well defined and independent of scale.
    zero_std = grouped.amax(dim=1) == grouped.amin(dim=1)

    adv = grouped - mean
    if estimator == "grpo" and scale_rewards:
        adv = adv / (std + eps)
    # Rounding in the mean can leave ~1e-8 residues (amplified by 1/eps); zero them.
    adv = torch.where(zero_std.unsqueeze(1), torch.zeros_like(adv), adv)

    return GroupAdvantages(
        advantages=adv.reshape(-1),
        group_mean=mean.squeeze(1),
        group_std=std.squeeze(1),
        zero_std=zero_std,
        frac_zero_std=zero_std.to(dtype).mean(),
    )

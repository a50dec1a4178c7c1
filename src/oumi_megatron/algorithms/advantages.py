"""Group-relative advantages for GRPO and Dr. GRPO (pure torch).

``A_i = (r_i - mean_g) / (std + eps)`` with the std of the completion's group (``group``), of
the whole step's rewards (``batch``, TRL's ``scale_rewards="batch"``), or no division
(``none``; Dr. GRPO). Groups are contiguous runs of completions of one prompt; they may differ
in size. As verl does, a group of one has mean 0 and std 1 (its advantage is its reward, over
``1 + eps`` when scaled). A group whose rewards all agree gets advantage exactly 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

AdvantageEstimator = Literal["grpo", "dr_grpo"]
RewardScaling = Literal["group", "batch", "none"]

# TRL's GRPOTrainer adds this to the std before dividing (verl: 1e-6).
DEFAULT_STD_EPS = 1e-4


@dataclass(frozen=True)
class GroupAdvantages:
    """Advantages plus per-group statistics for logging.

    Attributes:
        advantages: [num_completions], one value per completion.
        group_mean: [num_groups] mean reward of each group (0 for a group of one).
        group_std: [num_groups] unbiased (Bessel-corrected) std of each group (1 for a group
            of one).
        zero_std: [num_groups] bool, True where all rewards in the group are equal (a group
            of one included: it carries no comparison).
        frac_zero_std: scalar, fraction of groups with zero std (no learning signal).
    """

    advantages: torch.Tensor
    group_mean: torch.Tensor
    group_std: torch.Tensor
    zero_std: torch.Tensor
    frac_zero_std: torch.Tensor


def _group_sizes(num: int, groups: int | Sequence[int]) -> list[int]:
    if isinstance(groups, int):
        if groups < 1:
            raise ValueError(f"num_generations must be >= 1, got {groups}")
        if num % groups != 0:
            raise ValueError(f"{num} rewards is not a multiple of num_generations={groups}")
        return [groups] * (num // groups)
    sizes = [int(g) for g in groups]
    if any(g < 1 for g in sizes) or sum(sizes) != num:
        raise ValueError(f"group sizes {sizes[:8]} must be >= 1 and sum to {num} rewards")
    return sizes


def _scaling(estimator: str, scale_rewards: bool | str) -> RewardScaling:
    if estimator not in ("grpo", "dr_grpo"):
        raise ValueError(f"unknown advantage estimator {estimator!r}")
    if estimator == "dr_grpo" or scale_rewards is False:
        return "none"
    if scale_rewards is True:
        return "group"
    if scale_rewards not in ("group", "batch", "none"):
        raise ValueError(f"scale_rewards must be group, batch or none, got {scale_rewards!r}")
    return scale_rewards


def compute_group_advantages(
    rewards: torch.Tensor,
    num_generations: int | Sequence[int],
    estimator: AdvantageEstimator = "grpo",
    scale_rewards: bool | RewardScaling = True,
    eps: float = DEFAULT_STD_EPS,
    batch_std: float | None = None,
) -> GroupAdvantages:
    """Turn rewards of contiguous groups into group-relative advantages.

    Args:
        rewards: [num_completions]; completions of one prompt are contiguous.
        num_generations: the group size G, or each group's size (unequal groups).
        estimator: ``"grpo"``, or ``"dr_grpo"`` (never divides by a std).
        scale_rewards: ``"group"`` / True, ``"batch"``, ``"none"`` / False (grpo only).
        eps: added to the std before dividing.
        batch_std: the std of every reward of the step (over all replicas), for ``"batch"``;
            None: the std of ``rewards``.
    """
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D, got shape {tuple(rewards.shape)}")
    sizes = _group_sizes(rewards.numel(), num_generations)
    scaling = _scaling(estimator, scale_rewards)
    # Low-precision rewards would make the mean/std noisy; never go below fp32.
    dtype = torch.promote_types(rewards.dtype, torch.float32)
    r = rewards.detach().to(dtype)
    index = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    count = torch.tensor(sizes, dtype=dtype)
    total = torch.zeros(len(sizes), dtype=dtype).index_add_(0, index, r)
    mean = torch.where(count > 1, total / count, torch.zeros_like(total))
    # Unbiased std (torch.std's default, TRL's); verl's convention for a group of one.
    squares = torch.zeros(len(sizes), dtype=dtype).index_add_(0, index, (r - mean[index]) ** 2)
    std = torch.where(
        count > 1, (squares / (count - 1).clamp(min=1)).sqrt(), torch.ones_like(total)
    )
    # Exact equality rather than isclose(std, 0): well defined and independent of scale.
    high = torch.full((len(sizes),), -torch.inf, dtype=dtype).scatter_reduce_(0, index, r, "amax")
    low = torch.full((len(sizes),), torch.inf, dtype=dtype).scatter_reduce_(0, index, r, "amin")
    zero_std = high == low

    adv = r - mean[index]
    if scaling == "group":
        adv = adv / (std[index] + eps)
    elif scaling == "batch":
        scale = float(r.std()) if batch_std is None else batch_std
        adv = adv / (scale + eps)
    # A group of one keeps its (scaled) reward; in a larger group whose rewards all agree,
    # rounding in the mean can leave ~1e-8 residues (amplified by 1/eps): zero them.
    flat = (zero_std & (count > 1))[index]
    adv = torch.where(flat, torch.zeros_like(adv), adv)
    return GroupAdvantages(
        advantages=adv,
        group_mean=mean,
        group_std=std,
        zero_std=zero_std,
        frac_zero_std=zero_std.to(dtype).mean(),
    )


def batch_reward_std(rewards: torch.Tensor, all_reduce=None) -> float:
    """Unbiased std of every reward of the step: ``all_reduce`` sums ``[n, sum r, sum r^2]``
    (float64) over the ranks holding parts of the step (each rank calls it, with or without
    rewards); None: this tensor alone."""
    r = rewards.detach().to(torch.float64)
    stats = torch.stack(
        [torch.tensor(float(r.numel()), dtype=torch.float64), r.sum(), (r * r).sum()]
    )
    if all_reduce is not None:
        all_reduce(stats)
    n, total, squares = stats.tolist()
    if n < 2:
        return 1.0
    return max((squares - total * total / n) / (n - 1), 0.0) ** 0.5

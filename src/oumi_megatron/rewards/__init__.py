"""Reward functions for GRPO (TRL/Oumi calling convention) and robust batch scoring.

Importing this package never imports Oumi; see ``registry`` for how names resolve.
"""

from oumi_megatron.rewards.registry import (
    BUILTIN_REWARDS,
    RewardFunction,
    RewardResolutionError,
    available_reward_names,
    register_with_oumi,
    resolve_reward_function,
    resolve_reward_functions,
)
from oumi_megatron.rewards.scoring import RewardFailure, RewardResult, score_rollouts

__all__ = [
    "BUILTIN_REWARDS",
    "RewardFailure",
    "RewardFunction",
    "RewardResolutionError",
    "RewardResult",
    "available_reward_names",
    "register_with_oumi",
    "resolve_reward_function",
    "resolve_reward_functions",
    "score_rollouts",
]

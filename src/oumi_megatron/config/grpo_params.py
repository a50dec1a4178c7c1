"""``grpo:`` section: rollout sampling, the clipped policy loss, rewards.

Names follow TRL's GRPOConfig / NeMo-RL where they exist. Fields that Oumi's
``training.grpo`` (or ``training.reward_functions``) also defines keep Oumi's defaults
and are merged with it; see ``aliases.py``.
"""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import Field, model_validator

from oumi_megatron.config.strict_model import StrictModel

SECTION = "grpo"


class GrpoParams(StrictModel):
    """GRPO algorithm settings of the ``MEGATRON_GRPO`` trainer (YAML section ``grpo:``)."""

    num_generations: int = Field(
        8,
        ge=2,
        description=(
            "Completions sampled per prompt (the group). At least 2: advantages are "
            "relative to the group. Same as training.grpo.num_generations."
        ),
    )
    prompts_per_step: int | None = Field(
        None,
        ge=1,
        description=(
            "Prompts per GRPO step. None means megatron global_batch_size / num_generations "
            "(one optimizer step per rollout batch). If set, prompts_per_step x "
            "num_generations must be a multiple of the global batch size."
        ),
    )
    temperature: float = Field(
        0.9,
        gt=0.0,
        le=2.0,
        description=(
            "Sampling temperature, in (0, 2]. 0 (greedy) is rejected: identical completions "
            "give zero advantages. Oumi's default is kept; TRL and NeMo-RL use 1.0. Same as "
            "training.grpo.temperature."
        ),
    )
    top_p: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description=(
            "Nucleus sampling probability mass (vLLM's rule); 1.0 disables. The trainer's "
            "log-probs use the same truncated, renormalised distribution."
        ),
    )
    top_k: int | None = Field(
        None,
        ge=1,
        description=(
            "Sample only from the k likeliest tokens (ties with the k-th kept); None disables. "
            "The trainer's log-probs use the same truncated distribution."
        ),
    )
    max_prompt_length: int = Field(
        512,
        ge=1,
        description=(
            "Prompt tokens kept (longer prompts are cut on the left). Same as "
            "training.grpo.max_prompt_length."
        ),
    )
    max_completion_length: int = Field(
        256,
        ge=1,
        description=(
            "Maximum tokens generated per completion. Same as training.grpo.max_completion_length."
        ),
    )
    epsilon: float = Field(
        0.2,
        ge=0.0,
        lt=1.0,
        description=(
            "Lower clip of the importance ratio: ratio >= 1 - epsilon. Same as "
            "training.grpo.epsilon."
        ),
    )
    epsilon_high: float | None = Field(
        None,
        ge=0.0,
        description=(
            "Upper clip: ratio <= 1 + epsilon_high (DAPO 'clip-higher'). None means epsilon."
        ),
    )
    beta: float = Field(
        0.0,
        ge=0.0,
        description=(
            "KL penalty coefficient against the reference model; 0 loads no reference model."
        ),
    )
    kl_estimator: Literal["k1", "k2", "k3"] = Field(
        "k3", description="KL estimator (Schulman's k1/k2/k3); used only when beta > 0."
    )
    loss_aggregation: Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"] = (
        Field(
            "token-mean",
            description=(
                "How per-token losses become one number: 'token-mean' averages all tokens of "
                "the batch (DAPO), 'seq-mean-token-mean' averages per sequence then over "
                "sequences (original GRPO), 'seq-mean-token-sum-norm' sums per sequence and "
                "divides by a constant max_completion_length (Dr. GRPO)."
            ),
        )
    )
    advantage_estimator: Literal["grpo", "dr_grpo"] = Field(
        "grpo",
        description="'grpo': (reward - group mean) / group std; 'dr_grpo': reward - group mean.",
    )
    scale_rewards: bool | None = Field(
        None,
        description=(
            "Divide advantages by the group's reward std. None means true for 'grpo' and "
            "false for 'dr_grpo' (true with 'dr_grpo' is an error)."
        ),
    )
    truncated_importance_sampling_cap: float | None = Field(
        None,
        ge=1.0,
        description=(
            "Truncated importance sampling: cap on the trainer/inference probability ratio "
            "that corrects for engine mismatch (e.g. 2.0). None disables. Below 1 would "
            "down-weight every token, hence >= 1."
        ),
    )
    reward_functions: list[str] = Field(
        default_factory=list,
        description=(
            "Reward functions: names in Oumi's registry or dotted paths 'pkg.module.fn'. "
            "Same as training.reward_functions."
        ),
    )
    reward_function_kwargs: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description=(
            "Keyword arguments per reward function name. Same as training.reward_function_kwargs."
        ),
    )
    reward_weights: list[float] | None = Field(
        None,
        description="Weight of each reward function in the total reward; None means all 1.0.",
    )
    seed: int | None = Field(None, description="Sampling seed; None means training.seed.")
    accuracy_reward: str | None = Field(
        None,
        description=(
            "Reward function whose value 1.0 counts as a correct answer for the reward/accuracy "
            "metric; None means the first of reward_functions."
        ),
    )
    reward_failure_stop_frac: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description=(
            "Stop the run (exit code 3) when one reward function fails on at least this "
            "fraction of a step's samples; 1.0: on all of them. A sample a function cannot "
            "score gets 0 for it and is counted in reward/<name>/failures."
        ),
    )
    reward_failure_window: int = Field(
        5,
        ge=1,
        description=(
            "Also stop when one reward function fails on more than half of the samples in "
            "each of this many consecutive steps."
        ),
    )
    log_completions: bool = Field(
        False,
        description=(
            "Log prompts, completions and rewards every training.logging_steps. Same as "
            "training.grpo.log_completions."
        ),
    )

    @property
    def clip_high(self) -> float:
        """Upper clip epsilon: ``epsilon_high`` or ``epsilon``."""
        return self.epsilon if self.epsilon_high is None else self.epsilon_high

    @property
    def normalize_advantages_by_std(self) -> bool:
        """``scale_rewards`` with its estimator-dependent default resolved."""
        if self.scale_rewards is None:
            return self.advantage_estimator == "grpo"
        return self.scale_rewards

    @model_validator(mode="after")
    def _check_cross_fields(self) -> Self:
        if self.advantage_estimator == "dr_grpo" and self.scale_rewards:
            raise ValueError(
                f"{SECTION}.scale_rewards (true) contradicts {SECTION}.advantage_estimator "
                f"'dr_grpo', which does not divide by the reward std. Fix: remove "
                f"{SECTION}.scale_rewards, or use advantage_estimator: grpo."
            )
        weights = self.reward_weights
        if weights is not None and len(weights) != len(self.reward_functions):
            raise ValueError(
                f"{SECTION}.reward_weights has {len(weights)} entries ({weights}) but "
                f"{SECTION}.reward_functions has {len(self.reward_functions)} "
                f"({self.reward_functions}). Fix: give one weight per reward function."
            )
        unknown = sorted(set(self.reward_function_kwargs) - set(self.reward_functions))
        if unknown:
            raise ValueError(
                f"{SECTION}.reward_function_kwargs has entries {unknown} that are not in "
                f"{SECTION}.reward_functions ({self.reward_functions}). Fix: key the kwargs "
                f"by a listed reward function name."
            )
        return self

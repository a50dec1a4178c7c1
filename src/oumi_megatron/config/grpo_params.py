"""``grpo:`` section: rollout sampling, the clipped policy loss, rewards.

Names follow TRL's GRPOConfig / NeMo-RL where they exist. Fields that Oumi's
``training.grpo`` (or ``training.reward_functions``) also defines keep Oumi's defaults
and are merged with it; see ``aliases.py``.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal, Self

from pydantic import Field, model_validator

from oumi_megatron.algorithms.aggregation import AggregationMode
from oumi_megatron.algorithms.loss_types import (
    LOSS_TYPES,
    LossType,
    resolve_aggregation,
    resolve_epsilon_high,
)
from oumi_megatron.config.grpo_sections import OverlongBufferParams, RolloutCorrectionParams
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
    loss_type: LossType = Field(
        "dapo",
        description=(
            "The policy loss (docs/algorithms.md): 'grpo', 'dr_grpo', 'dapo', 'bnpo', 'gspo', "
            "'gspo_token', 'cispo' or 'sapo'. It sets the objective, the default "
            "loss_aggregation and (dapo) the default epsilon_high. TRL's names and default."
        ),
    )
    epsilon: float = Field(
        0.2,
        ge=0.0,
        le=1.0,
        description=(
            "Lower clip of the importance ratio: ratio >= 1 - epsilon. Same as "
            "training.grpo.epsilon."
        ),
    )
    epsilon_high: float | None = Field(
        None,
        ge=0.0,
        description=(
            "Upper clip: ratio <= 1 + epsilon_high (DAPO 'clip-higher'). None means 0.28 for "
            "loss_type dapo, epsilon otherwise."
        ),
    )
    clip_ratio_c: float | None = Field(
        None,
        gt=1.0,
        description=(
            "Dual-clip constant (> 1): for negative advantages the loss is capped at "
            "-c x advantage (verl's clip_ratio_c, DAPO recipe: 10). None disables. Only for "
            "the clipped objectives grpo, dr_grpo, dapo, bnpo."
        ),
    )
    sapo_temperature_pos: float = Field(
        1.0, gt=0.0, description="SAPO gate temperature for positive advantages (verl tau_pos)."
    )
    sapo_temperature_neg: float = Field(
        1.05,
        gt=0.0,
        description="SAPO gate temperature for other advantages (verl tau_neg).",
    )
    beta: float = Field(
        0.0,
        ge=0.0,
        description=(
            "KL penalty coefficient against the reference model; 0 loads no reference model."
        ),
    )
    kl_estimator: Literal[
        "k1", "k2", "k3", "abs", "k1+", "k3+", "abs+", "kl", "mse", "low_var_kl", "low_var_kl+"
    ] = Field(
        "k3",
        description=(
            "KL estimator, as verl defines it: 'k1', 'k2', 'k3' (clamped at 10), 'abs'; a "
            "trailing '+' keeps the value and takes k2's gradient (straight-through). verl's "
            "names 'kl', 'mse', 'low_var_kl' are accepted. Used only when beta > 0."
        ),
    )
    kl_in_reward_coef: float = Field(
        0.0,
        ge=0.0,
        description=(
            "KL in the reward (verl's use_kl_in_reward, fixed kl_coef): each completion's reward "
            "loses coef x sum over its tokens of kl_estimator(old, reference) before the group "
            "advantages. 0 disables; independent of beta (the KL loss term)."
        ),
    )
    loss_aggregation: AggregationMode | None = Field(
        None,
        description=(
            "How per-token losses become one number, as verl's loss_agg_mode: 'token-mean', "
            "'token-sum', 'seq-mean-token-sum', 'seq-mean-token-mean', "
            "'seq-mean-token-sum-norm' (token sums / (sequences x loss_scale_factor), Dr. "
            "GRPO). None means the loss_type's own."
        ),
    )
    loss_scale_factor: float | None = Field(
        None,
        gt=0.0,
        description=(
            "The constant of 'seq-mean-token-sum-norm' (verl's loss_scale_factor). None means "
            "max_completion_length."
        ),
    )
    advantage_estimator: Literal["grpo", "dr_grpo"] = Field(
        "grpo",
        description="'grpo': (reward - group mean) / std; 'dr_grpo': reward - group mean.",
    )
    scale_rewards: Literal["group", "batch", "none"] | bool | None = Field(
        None,
        description=(
            "Divide advantages by a reward std (TRL's scale_rewards): 'group' (each group's), "
            "'batch' (the whole step's), 'none'; true = 'group', false = 'none'. None means "
            "'none' for advantage_estimator or loss_type dr_grpo, else 'group'."
        ),
    )
    advantage_epsilon: float = Field(
        1e-4,
        gt=0.0,
        description="Added to the reward std before dividing (TRL: 1e-4, verl: 1e-6).",
    )
    rollout_correction: RolloutCorrectionParams = Field(
        default_factory=RolloutCorrectionParams,
        description="Truncated / masked importance sampling against the rollout engine.",
    )
    truncated_importance_sampling_cap: float | None = Field(
        None,
        ge=1.0,
        description=(
            "Deprecated: use rollout_correction.importance_sampling: token and "
            "rollout_correction.is_cap (read as those, with a warning)."
        ),
    )
    overlong_filtering: bool = Field(
        False,
        description=(
            "Leave completions cut at max_completion_length out of the loss (DAPO overlong "
            "filtering; TRL's mask_truncated_completions)."
        ),
    )
    dynamic_sampling: bool = Field(
        False,
        description=(
            "DAPO dynamic sampling (verl's filter_groups): drop prompt groups whose rewards all "
            "agree and generate from further prompts until prompts_per_step groups vary."
        ),
    )
    dynamic_sampling_max_rounds: int = Field(
        4,
        ge=1,
        description=(
            "Generation rounds per step at most with dynamic_sampling, the first included; then "
            "zero-variance groups fill the batch (counted in dynamic_sampling/filled_groups)."
        ),
    )
    max_off_policy_steps: int = Field(
        0,
        ge=0,
        le=1,
        description=(
            "1: one-step off-policy (async) GRPO: the rollout processes generate step k+1 "
            "while the trainer updates on step k (weights synced when the update ends); the "
            "loss corrects for the stale behaviour policy with rollout_correction (token TIS "
            "when unset). 0: on-policy. Needs weight_sync_method gloo or nccl."
        ),
    )
    overlong_buffer: OverlongBufferParams | None = Field(
        None,
        description="DAPO's soft overlong punishment added to the reward; None disables.",
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
            "score gets 0 for it and is counted in reward/<name>/failures. The same bound "
            "applies to completions with no token (response_length/empty_frac) and to "
            "malformed ones (response_length/malformed_frac: log-probs that do not match the "
            "tokens; emptied, not trained on)."
        ),
    )
    reward_failure_window: int = Field(
        5,
        ge=1,
        description=(
            "Also stop when one reward function fails on more than half of the samples in "
            "each of this many consecutive steps (or more than half of the completions are "
            "empty, or malformed, in each)."
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
        """Upper clip epsilon: ``epsilon_high``, the loss type's default, or ``epsilon``."""
        return resolve_epsilon_high(self.loss_type, self.epsilon, self.epsilon_high)

    @property
    def aggregation(self) -> AggregationMode:
        """``loss_aggregation``, or the loss type's own."""
        return resolve_aggregation(self.loss_type, self.loss_aggregation)

    @property
    def reward_scaling(self) -> Literal["group", "batch", "none"]:
        """``scale_rewards`` with booleans and the estimator-dependent default resolved."""
        if self.scale_rewards is None:
            dr = "dr_grpo" in (self.advantage_estimator, self.loss_type)
            return "none" if dr else "group"
        if isinstance(self.scale_rewards, bool):
            return "group" if self.scale_rewards else "none"
        return self.scale_rewards

    @property
    def correction(self) -> RolloutCorrectionParams:
        """``rollout_correction``, with the deprecated TIS cap read into it."""
        cap = self.truncated_importance_sampling_cap
        if cap is None:
            return self.rollout_correction
        return self.rollout_correction.model_copy(
            update={"importance_sampling": "token", "is_cap": cap}
        )

    @model_validator(mode="after")
    def _check_cross_fields(self) -> Self:
        if self.advantage_estimator == "dr_grpo" and self.scale_rewards not in (
            None,
            False,
            "none",
        ):
            shown = str(self.scale_rewards).lower()
            raise ValueError(
                f"{SECTION}.scale_rewards ({shown}) contradicts "
                f"{SECTION}.advantage_estimator 'dr_grpo', which does not divide by the reward "
                f"std. Fix: remove {SECTION}.scale_rewards, or use advantage_estimator: grpo."
            )
        self.aggregation  # noqa: B018 -- raises for an aggregation the loss type cannot take
        if self.clip_ratio_c is not None and LOSS_TYPES[self.loss_type].objective != "clip":
            raise ValueError(
                f"{SECTION}.clip_ratio_c applies to the clipped objectives (loss_type grpo, "
                f"dr_grpo, dapo, bnpo), not to '{self.loss_type}'. Fix: remove "
                f"{SECTION}.clip_ratio_c."
            )
        if self.truncated_importance_sampling_cap is not None:
            if self.rollout_correction.importance_sampling is not None:
                raise ValueError(
                    f"{SECTION}.truncated_importance_sampling_cap (deprecated) and "
                    f"{SECTION}.rollout_correction.importance_sampling are both set. Fix: keep "
                    f"rollout_correction only."
                )
            warnings.warn(
                f"{SECTION}.truncated_importance_sampling_cap is deprecated and read as "
                f"rollout_correction: {{importance_sampling: token, is_cap: "
                f"{self.truncated_importance_sampling_cap}}} (the same maths). Write that "
                f"instead.",
                FutureWarning,
                stacklevel=2,
            )
        if self.overlong_buffer is not None and (
            self.overlong_buffer.length > self.max_completion_length
        ):
            raise ValueError(
                f"{SECTION}.overlong_buffer.length ({self.overlong_buffer.length}) exceeds "
                f"{SECTION}.max_completion_length ({self.max_completion_length}). Fix: a buffer "
                f"at most max_completion_length long (DAPO: 4096 of 20480)."
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

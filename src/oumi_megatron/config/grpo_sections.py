"""Sub-sections of ``grpo:``: rollout correction and DAPO's overlong reward shaping.

The maths is in ``algorithms/rollout_correction.py`` and ``algorithms/overlong.py``;
docs/algorithms.md says which peer calls each option what.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from oumi_megatron.config.strict_model import StrictModel


class RolloutCorrectionParams(StrictModel):
    """``grpo.rollout_correction``: correct for the rollout engine sampling from a slightly
    different distribution than the trainer computes (both parts off by default)."""

    importance_sampling: Literal["token", "sequence"] | None = Field(
        None,
        description=(
            "Truncated importance sampling: multiply each token's policy-gradient loss by "
            "min(w, is_cap), w = trainer/engine probability ratio of the token ('token') or "
            "the product over its sequence ('sequence'). None disables."
        ),
    )
    is_cap: float = Field(2.0, gt=0.0, description="Truncation cap of the IS weight.")
    rejection: Literal["token", "sequence", "geometric"] | None = Field(
        None,
        description=(
            "Masked importance sampling (IcePop): weight 0 for a token ('token') or a whole "
            "sequence whose ratio product ('sequence') or geometric mean ('geometric') leaves "
            "[rejection_low, rejection_high]. None disables."
        ),
    )
    rejection_low: float = Field(0.5, ge=0.0, description="Lowest accepted ratio.")
    rejection_high: float = Field(2.0, gt=0.0, description="Highest accepted ratio.")

    @model_validator(mode="after")
    def _check_bounds(self) -> Self:
        if self.rejection_low >= self.rejection_high:
            raise ValueError(
                f"grpo.rollout_correction.rejection_low ({self.rejection_low}) must be below "
                f"rejection_high ({self.rejection_high}). Fix: e.g. rejection_low: 0.5, "
                f"rejection_high: 2.0."
            )
        return self


class OverlongBufferParams(StrictModel):
    """``grpo.overlong_buffer``: DAPO's soft overlong punishment, added to the reward."""

    length: int = Field(
        ...,
        ge=1,
        description=(
            "Buffer before max_completion_length: a completion longer than "
            "max_completion_length - length loses penalty_factor x (excess / length)."
        ),
    )
    penalty_factor: float = Field(
        1.0, ge=0.0, description="Penalty at max_completion_length (DAPO: 1.0)."
    )

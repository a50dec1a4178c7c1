"""Checks against the world size and the model shape, mirroring Megatron-Core's own rules.

Megatron asserts these deep inside ``initialize_model_parallel`` / ``TransformerConfig``
after processes have started; checking them up front gives an actionable message instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from oumi_megatron.config.errors import ConfigError, Problems
from oumi_megatron.config.model_shape import ModelShape
from oumi_megatron.config.trainer_types import MEGATRON_GRPO
from oumi_megatron.parallel.layout_rules import (
    check_experts,
    check_global_batch,
    check_model_split,
    check_rollout_replicas,
)

if TYPE_CHECKING:
    from oumi_megatron.config.training_config import MegatronTrainingConfig


@dataclass(frozen=True)
class ValidatedLayout:
    """Sizes derived from a validated config and world size."""

    world_size: int
    data_parallel_size: int
    expert_data_parallel_size: int
    global_batch_size: int
    num_microbatches: int
    """Micro batches per rank per optimizer step (gradient accumulation)."""
    prompts_per_step: int | None
    """GRPO only: prompts sampled per step (``None`` for SFT)."""


def _rule(check, *args):
    """A ``parallel.layout_rules`` check, its ``LayoutError`` as a ``ConfigError``."""
    from oumi_megatron.parallel.layout_rules import LayoutError

    try:
        return check(*args)
    except LayoutError as error:
        raise ConfigError(str(error)) from None


def _check_batches(cfg: MegatronTrainingConfig, dp: int) -> tuple[int, int]:
    m = cfg.megatron
    micro, accum = m.micro_batch_size, cfg.training.gradient_accumulation_steps
    global_batch = m.global_batch_size if m.global_batch_size is not None else micro * dp * accum
    num_micro = _rule(check_global_batch, global_batch, micro, dp)
    # gradient_accumulation_steps == 1 is Oumi's default and means "not used"; any other
    # value must agree with what Megatron derives.
    if accum != 1 and accum != num_micro:
        raise ConfigError(
            f"training.gradient_accumulation_steps ({accum}) disagrees with megatron: "
            f"global_batch_size / (micro_batch_size × data-parallel size) = {global_batch} / "
            f"({micro} × {dp}) = {num_micro}. Fix: remove training.gradient_accumulation_steps "
            f"(Megatron derives it) or set it to {num_micro}."
        )
    return global_batch, num_micro


def _check_grpo_batches(cfg: MegatronTrainingConfig, global_batch: int) -> int:
    groups = cfg.grpo.num_generations
    if global_batch % groups != 0:
        raise ConfigError(
            f"megatron.global_batch_size ({global_batch}) must be a multiple of "
            f"grpo.num_generations ({groups}) so every optimizer step sees whole prompt "
            f"groups. Fix: use a multiple of {groups}."
        )
    prompts = cfg.grpo.prompts_per_step
    if prompts is None:
        return global_batch // groups
    rollout = prompts * groups
    if rollout % global_batch != 0:
        raise ConfigError(
            f"grpo.prompts_per_step ({prompts}) × grpo.num_generations ({groups}) = {rollout} "
            f"sequences per step must be a multiple of megatron.global_batch_size "
            f"({global_batch}): each step runs a whole number of optimizer steps. Fix: set "
            f"grpo.prompts_per_step to a multiple of {global_batch // groups}."
        )
    return prompts


def check_layout(
    cfg: MegatronTrainingConfig,
    world_size: int,
    shape: ModelShape | None,
    problems: Problems | None = None,
) -> ValidatedLayout | None:
    """Checks that the config fits ``world_size`` ranks and the model ``shape`` (checks that
    need the shape are skipped when it is None).

    Raises one ``ConfigError`` listing every problem found, or, given ``problems``, records
    them there and returns None when the layout could not be derived.
    """
    own = problems is None
    problems = Problems() if own else problems
    before = len(problems.messages)
    m = cfg.megatron
    dp = problems.check(m.data_parallel_size, world_size)
    expert_dp = problems.check(_rule, check_experts, m, world_size, shape) if shape else None
    if shape is not None:
        problems.check(_rule, check_model_split, m, shape)
    batches = problems.check(_check_batches, cfg, dp) if dp is not None else None
    prompts = None
    if cfg.training.trainer_type == MEGATRON_GRPO:
        if batches is not None:
            prompts = problems.check(_check_grpo_batches, cfg, batches[0])
        problems.check(_rule, check_rollout_replicas, m, world_size)
    if own:
        problems.raise_if_any()
    if len(problems.messages) > before or batches is None or expert_dp is None:
        return None
    return ValidatedLayout(
        world_size=world_size,
        data_parallel_size=dp,
        expert_data_parallel_size=expert_dp,
        global_batch_size=batches[0],
        num_microbatches=batches[1],
        prompts_per_step=prompts,
    )

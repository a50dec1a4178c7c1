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

if TYPE_CHECKING:
    from oumi_megatron.config.megatron_params import MegatronParams
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


def _divisors(n: int) -> str:
    return ", ".join(str(d) for d in range(1, n + 1) if n % d == 0)


def _check_experts(m: MegatronParams, world_size: int, shape: ModelShape) -> int:
    ep = m.expert_model_parallel_size
    etp = m.expert_tensor_parallel_size or m.tensor_model_parallel_size
    pp = m.pipeline_model_parallel_size
    if shape.num_experts is None:
        if ep > 1:
            raise ConfigError(
                f"megatron.expert_model_parallel_size ({ep}) > 1 but the model is dense (no "
                f"experts). Fix: set megatron.expert_model_parallel_size: 1."
            )
    elif shape.num_experts % ep != 0:
        raise ConfigError(
            f"The model's number of experts ({shape.num_experts}) must be divisible by "
            f"megatron.expert_model_parallel_size ({ep}). Fix: use one of "
            f"{_divisors(shape.num_experts)}."
        )
    if shape.num_experts is not None and m.tensor_model_parallel_size > 1:
        raise ConfigError(
            f"megatron.tensor_model_parallel_size ({m.tensor_model_parallel_size}) > 1 with a "
            f"mixture-of-experts model: Megatron trains MoE layers under tensor parallelism "
            f"only with sequence parallelism, which this trainer does not provide yet. Fix: "
            f"set megatron.tensor_model_parallel_size: 1 and split the experts with "
            f"megatron.expert_model_parallel_size (and expert_tensor_parallel_size)."
        )
    expert_grid = etp * ep * pp
    if world_size % expert_grid != 0:
        raise ConfigError(
            f"world_size ({world_size}) must be divisible by expert_tensor_parallel_size "
            f"({etp}) × expert_model_parallel_size ({ep}) × pipeline_model_parallel_size "
            f"({pp}) = {expert_grid} (Megatron's expert layout; expert_tensor_parallel_size "
            f"defaults to tensor_model_parallel_size). Fix: change megatron."
            f"expert_model_parallel_size / expert_tensor_parallel_size, or launch a multiple "
            f"of {expert_grid} ranks."
        )
    return world_size // expert_grid


def _check_model_split(m: MegatronParams, shape: ModelShape) -> None:
    tp = m.tensor_model_parallel_size
    for count, what in (
        (shape.num_attention_heads, "attention heads"),
        (shape.num_kv_heads, "key/value heads"),
    ):
        if count % tp != 0:
            raise ConfigError(
                f"The model's {what} ({count}) must be divisible by "
                f"megatron.tensor_model_parallel_size ({tp}): each tensor-parallel rank holds "
                f"whole heads. Fix: use a tensor_model_parallel_size in {_divisors(count)}."
            )
    pp, vpp = m.pipeline_model_parallel_size, m.virtual_pipeline_model_parallel_size or 1
    stages = pp * vpp
    if shape.num_layers % stages != 0:
        factors = f"pipeline_model_parallel_size ({pp})"
        if m.virtual_pipeline_model_parallel_size is not None:
            factors += f" × virtual_pipeline_model_parallel_size ({vpp}) = {stages}"
        raise ConfigError(
            f"The model's layers ({shape.num_layers}) must be divisible by {factors}: every "
            f"pipeline stage gets the same number of layers. Fix: use values whose product "
            f"is in {_divisors(shape.num_layers)}."
        )
    recompute = m.transformer_config.recompute_num_layers
    per_stage = shape.num_layers // stages
    if recompute is not None and recompute > per_stage:
        raise ConfigError(
            f"megatron.transformer_config.recompute_num_layers ({recompute}) exceeds the "
            f"layers per pipeline stage ({per_stage}). Fix: set it to at most {per_stage}."
        )


def _check_batches(cfg: MegatronTrainingConfig, dp: int) -> tuple[int, int]:
    m = cfg.megatron
    micro, accum = m.micro_batch_size, cfg.training.gradient_accumulation_steps
    per_pass = micro * dp
    global_batch = m.global_batch_size if m.global_batch_size is not None else per_pass * accum
    if global_batch % per_pass != 0:
        suggestion = per_pass * max(1, global_batch // per_pass)
        raise ConfigError(
            f"megatron.global_batch_size ({global_batch}) must be divisible by "
            f"megatron.micro_batch_size ({micro}) × data-parallel size ({dp}) = {per_pass}. "
            f"Fix: use a multiple of {per_pass}, e.g. {suggestion}."
        )
    num_micro = global_batch // per_pass
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


def _check_rollout_replicas(m: MegatronParams, world_size: int) -> None:
    """Replicas of ``rollout_tensor_parallel_size`` consecutive ranks, each within one node."""
    import os

    size = m.rollout_tensor_parallel_size
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
    if world_size % size or per_node % size:
        raise ConfigError(
            f"megatron.rollout_tensor_parallel_size ({size}) must divide the processes per "
            f"node ({per_node}) and the world size ({world_size}): a rollout replica is that "
            f"many consecutive ranks of one node. Fix: use one of {_divisors(per_node)}."
        )


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
    expert_dp = problems.check(_check_experts, m, world_size, shape) if shape else None
    if shape is not None:
        problems.check(_check_model_split, m, shape)
    batches = problems.check(_check_batches, cfg, dp) if dp is not None else None
    prompts = None
    if cfg.training.trainer_type == MEGATRON_GRPO:
        if batches is not None:
            prompts = problems.check(_check_grpo_batches, cfg, batches[0])
        problems.check(_check_rollout_replicas, m, world_size)
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

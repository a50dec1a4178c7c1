"""``validate_config``: every check that must pass before any work starts."""

from __future__ import annotations

from pathlib import Path

from oumi.exceptions import OumiConfigError

from oumi_megatron.config.data_checks import check_data
from oumi_megatron.config.errors import ConfigError, Problems
from oumi_megatron.config.grpo_params import GrpoParams
from oumi_megatron.config.layout_checks import ValidatedLayout, check_layout
from oumi_megatron.config.megatron_params import MegatronParams
from oumi_megatron.config.model_shape import ModelShape
from oumi_megatron.config.pydantic_errors import validate_section
from oumi_megatron.config.static_checks import check_static
from oumi_megatron.config.training_config import MegatronTrainingConfig


def looks_like_local_path(name: str) -> bool:
    """True if ``name`` is meant as a filesystem path rather than a Hub id like ``org/model``."""
    return name.startswith(("/", "./", "../", "~", ".\\")) or name.count("/") >= 2


def check_model_path(cfg: MegatronTrainingConfig) -> None:
    name = cfg.model.model_name
    if looks_like_local_path(name) and not Path(name).expanduser().exists():
        raise ConfigError(
            f"model.model_name ('{name}') looks like a local path but does not exist. Fix: "
            f"point it at a Hugging Face model directory, or use a Hub id such as "
            f"'Qwen/Qwen2.5-0.5B'."
        )


def check_rewards(cfg: MegatronTrainingConfig) -> None:
    """Every ``grpo.reward_functions`` entry resolves (built-in, registered, or importable)."""
    from oumi_megatron.config.trainer_types import MEGATRON_GRPO
    from oumi_megatron.rewards import RewardResolutionError, resolve_reward_functions

    grpo = cfg.grpo
    if cfg.training.trainer_type != MEGATRON_GRPO or not grpo.reward_functions:
        return
    try:
        resolve_reward_functions(grpo.reward_functions, grpo.reward_function_kwargs)
    except RewardResolutionError as error:
        raise ConfigError(f"grpo.reward_functions: {error}") from None


def check_lengths(cfg: MegatronTrainingConfig, shape: ModelShape) -> None:
    """GRPO: prompt plus completion fit the model's positions (SFT and conversion do not
    generate, so GRPO's lengths do not apply)."""
    from oumi_megatron.config.trainer_types import MEGATRON_GRPO

    limit, grpo = shape.max_positions, cfg.grpo
    total = grpo.max_prompt_length + grpo.max_completion_length
    if cfg.training.trainer_type != MEGATRON_GRPO or not limit or total <= limit:
        return
    room = limit - grpo.max_prompt_length
    fix = (
        f"lower grpo.max_completion_length to at most {room} (or max_prompt_length)"
        if room > 0
        else f"lower grpo.max_prompt_length below {limit}, then max_completion_length to fit"
    )
    raise ConfigError(
        f"grpo.max_prompt_length ({grpo.max_prompt_length}) + grpo.max_completion_length "
        f"({grpo.max_completion_length}) = {total} exceeds the model's "
        f"max_position_embeddings ({limit}). Fix: {fix}."
    )


def validate_config(
    cfg: MegatronTrainingConfig,
    world_size: int,
    model_shape: ModelShape | None,
    *,
    run_oumi_finalize: bool = True,
    problems: Problems | None = None,
) -> ValidatedLayout:
    """Checks ``cfg`` for a run on ``world_size`` ranks of a model shaped ``model_shape``.

    Re-runs the load-time checks (the config may have been edited since), then the model
    path, parallel layout and batch-size rules, the rewards and the data, collecting every
    problem (with those already in ``problems``) into one ``ConfigError``. Then Oumi's
    ``finalize_and_validate`` (which needs a training dataset and may resolve adapters via the
    Hub; skip it with ``run_oumi_finalize=False``, e.g. for checkpoint conversion).
    ``model_shape`` None (the model could not be read) skips the checks that need it.

    Returns:
        The derived sizes (data-parallel size, micro batches per step, ...).

    Raises:
        ConfigError: naming each field, its value and a fix.
    """
    problems = Problems() if problems is None else problems
    cfg.megatron = validate_section(cfg.megatron, MegatronParams, "megatron")
    cfg.grpo = validate_section(cfg.grpo, GrpoParams, "grpo")
    check_static(cfg, problems)
    problems.check(check_model_path, cfg)
    layout = check_layout(cfg, world_size, model_shape, problems)
    if model_shape is not None:
        problems.check(check_lengths, cfg, model_shape)
    problems.check(check_rewards, cfg)
    if run_oumi_finalize:  # training: conversion and export need no data
        problems.check(check_data, cfg)
    problems.raise_if_any()
    if run_oumi_finalize:
        try:
            cfg.finalize_and_validate()
        except OumiConfigError as e:
            if isinstance(e, ConfigError):
                raise
            raise ConfigError(f"{e} (raised by Oumi's finalize_and_validate)") from e
    return layout

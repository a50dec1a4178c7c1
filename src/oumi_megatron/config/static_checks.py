"""Checks that need only the config (no world size, no model): run at load time."""

from __future__ import annotations

from typing import TYPE_CHECKING

from oumi_megatron.config.errors import ConfigError, Problems
from oumi_megatron.config.oumi_fields import unused_oumi_fields
from oumi_megatron.config.trainer_types import MEGATRON_GRPO, MEGATRON_TRAINER_TYPES

if TYPE_CHECKING:
    from oumi_megatron.config.training_config import MegatronTrainingConfig


def _check_trainer_type(cfg: MegatronTrainingConfig) -> None:
    trainer = cfg.training.trainer_type
    if trainer not in MEGATRON_TRAINER_TYPES:
        names = " or ".join(sorted(t.name for t in MEGATRON_TRAINER_TYPES))
        raise ConfigError(
            f"training.trainer_type ({trainer.name}) is not a Megatron trainer; this config "
            f"needs {names}. Fix: set training.trainer_type: MEGATRON_GRPO."
        )


def _check_no_fsdp_deepspeed(cfg: MegatronTrainingConfig) -> list[str]:
    trainer = cfg.training.trainer_type.name
    problems = []
    if cfg.fsdp.enable_fsdp:
        problems.append(
            f"fsdp.enable_fsdp (true) cannot be combined with training.trainer_type {trainer}: "
            f"Megatron shards the model itself (megatron.*_parallel_size, "
            f"megatron.ddp_config.use_distributed_optimizer). Fix: set fsdp.enable_fsdp: false."
        )
    if cfg.deepspeed.enable_deepspeed:
        problems.append(
            f"deepspeed.enable_deepspeed (true) cannot be combined with training.trainer_type "
            f"{trainer}: Megatron shards the model itself. Fix: set "
            f"deepspeed.enable_deepspeed: false."
        )
    return problems


def _check_replaced_oumi_fields(cfg: MegatronTrainingConfig) -> list[str]:
    from oumi_megatron.config.aliases import OUMI_ALIAS_PATHS

    problems = unused_oumi_fields(cfg, OUMI_ALIAS_PATHS)
    optimizer = cfg.training.optimizer
    if not optimizer.startswith("adam"):
        problems.append(
            f"training.optimizer ({optimizer!r}) is not supported: Megatron trainers use "
            f"Megatron's AdamW. Fix: remove training.optimizer or use 'adamw_torch'."
        )
    return problems


def _check_grpo(cfg: MegatronTrainingConfig) -> None:
    if cfg.training.trainer_type != MEGATRON_GRPO:
        return
    if not cfg.grpo.reward_functions:
        raise ConfigError(
            "grpo.reward_functions is empty; MEGATRON_GRPO needs at least one reward. Fix: "
            "list registered reward function names or dotted paths 'pkg.module.fn' under "
            "grpo.reward_functions (or training.reward_functions)."
        )
    accuracy = cfg.grpo.accuracy_reward
    if accuracy is not None and accuracy not in cfg.grpo.reward_functions:
        raise ConfigError(
            f"grpo.accuracy_reward ({accuracy!r}) is not one of grpo.reward_functions "
            f"{cfg.grpo.reward_functions}. Fix: name one of them (weight 0 logs it only)."
        )
    sequence = cfg.grpo.max_prompt_length + cfg.grpo.max_completion_length
    budget = cfg.megatron.max_tokens_per_microbatch
    if budget is not None and budget < sequence:
        raise ConfigError(
            f"megatron.max_tokens_per_microbatch ({budget}) is smaller than one full "
            f"sequence: grpo.max_prompt_length + grpo.max_completion_length = {sequence}. "
            f"Fix: raise max_tokens_per_microbatch to at least {sequence}."
        )


def _check_off_policy(cfg: MegatronTrainingConfig) -> None:
    steps = cfg.grpo.max_off_policy_steps
    if steps == 0:
        return
    if cfg.megatron.weight_sync_method not in ("gloo", "nccl"):
        raise ConfigError(
            f"grpo.max_off_policy_steps ({steps}) generates the next step while this one "
            f"trains, which needs rollout in processes of their own; weight_sync_method "
            f"{cfg.megatron.weight_sync_method!r} generates in the trainer's processes. Fix: set "
            f"megatron.weight_sync_method: nccl (gloo on CPU), or max_off_policy_steps: 0."
        )
    if cfg.grpo.dynamic_sampling:
        raise ConfigError(
            f"grpo.max_off_policy_steps ({steps}) and grpo.dynamic_sampling cannot be combined "
            f"yet (the rounds of a step would wait on each other). Fix: turn one of them off."
        )


def _check_lr(cfg: MegatronTrainingConfig) -> None:
    lr, min_lr = cfg.training.learning_rate, cfg.megatron.optimizer_config.min_lr
    if lr <= 0:
        raise ConfigError(
            f"training.learning_rate ({lr}) must be > 0. Fix: set a positive peak learning "
            f"rate (GRPO recipes use 1e-6 to 1e-5)."
        )
    if min_lr > lr:
        raise ConfigError(
            f"megatron.optimizer_config.min_lr ({min_lr}) exceeds training.learning_rate "
            f"({lr}); the schedule decays from learning_rate to min_lr. Fix: lower min_lr."
        )


def check_oumi_compatibility(cfg: MegatronTrainingConfig) -> None:
    """Rejects Oumi settings that a Megatron trainer would otherwise silently ignore (all of
    them in one ``ConfigError``)."""
    problems = _check_no_fsdp_deepspeed(cfg) + _check_replaced_oumi_fields(cfg)
    if problems:
        raise ConfigError.of(problems)


def _check_chat_template(cfg: MegatronTrainingConfig) -> None:
    from oumi.utils.io_utils import get_oumi_root_directory

    name = cfg.model.chat_template
    if not name:
        return
    directory = get_oumi_root_directory() / "datasets" / "chat_templates"
    if not (directory / f"{name.lower()}.jinja").is_file():
        names = sorted(f.stem for f in directory.glob("*.jinja"))
        raise ConfigError(
            f"model.chat_template ({name!r}) is not one of Oumi's chat templates. Fix: use "
            f"one of {', '.join(names)}, or remove it to use the tokenizer's own template."
        )


def _check_eval(cfg: MegatronTrainingConfig) -> None:
    training = cfg.training
    strategy, every = str(training.eval_strategy), training.eval_steps
    has_data = bool(cfg.data.validation.datasets)
    if strategy == "epoch":
        raise ConfigError(
            "training.eval_strategy ('epoch') is not supported by Megatron trainers. Fix: use "
            "eval_strategy: steps with eval_steps: N."
        )
    if has_data and strategy != "steps":
        raise ConfigError(
            f"data.validation is set but training.eval_strategy is {strategy!r}, so it would "
            f"never be used. Fix: set training.eval_strategy: steps (and eval_steps), or remove "
            f"data.validation."
        )
    if strategy == "steps" and not has_data:
        raise ConfigError(
            "training.eval_strategy is 'steps' but data.validation has no datasets. Fix: list "
            "held-out prompt datasets under data.validation.datasets, or set eval_strategy: no."
        )
    if strategy == "steps" and (every < 1 or int(every) != every):
        raise ConfigError(
            f"training.eval_steps ({every}) must be a whole number of steps >= 1 for Megatron "
            f"trainers (Oumi's fractions of the run are not supported). Fix: e.g. eval_steps: 10."
        )


def _check_length(cfg: MegatronTrainingConfig) -> None:
    steps, epochs = cfg.training.max_steps, cfg.training.num_train_epochs
    if steps <= 0 and epochs <= 0:
        raise ConfigError(
            f"training.max_steps ({steps}) and training.num_train_epochs ({epochs}) leave "
            f"nothing to train. Fix: set training.max_steps > 0, or num_train_epochs >= 1 "
            f"with max_steps <= 0 (whole epochs of the prompt set)."
        )


def check_static(cfg: MegatronTrainingConfig, problems: Problems | None = None) -> None:
    """Every config-only check; raises one ``ConfigError`` listing all problems found (or
    records them in ``problems`` for the caller to raise with its own)."""
    own = problems is None
    problems = Problems() if own else problems
    for check in (_check_trainer_type, check_oumi_compatibility, _check_grpo, _check_lr,
                  _check_length, _check_chat_template, _check_eval,
                  _check_off_policy):  # fmt: skip
        problems.check(check, cfg)
    if own:
        problems.raise_if_any()

"""How the Megatron trainers treat Oumi's own fields (the contract documented for users).

Every leaf field of Oumi's ``TrainingConfig`` is one of:
- an alias of one of our fields (``aliases.ALIASES``);
- read with Oumi's meaning (``READ_OUMI_FIELDS``);
- refused when set to anything but Oumi's default (``unused_oumi_fields``): with its specific
  fix when it has a Megatron-side replacement (``REPLACED_OUMI_FIELDS``), else as unused.
No field is accepted and silently ignored. List items are named ``[]`` (``data.train.datasets[]
.dataset_name``).
"""

from __future__ import annotations

from typing import Final

READ_OUMI_FIELDS: Final[dict[str, str]] = {
    "model.model_name": "HF model directory or Hub id to start from.",
    "model.tokenizer_name": "Tokenizer to use; defaults to model.model_name.",
    "model.chat_template": "Chat template applied to prompts.",
    "model.trust_remote_code": "Allow the model's own code (off by default).",
    "data.train.datasets": "Prompt (GRPO) or conversation (SFT) datasets.",
    "data.train.datasets[].dataset_name": "Shipped name, file format, Oumi GRPO dataset (read by its registered class), local path or Hub id.",
    "data.train.datasets[].dataset_path": "File or directory to read.",
    "data.train.datasets[].subset": "Hub dataset configuration.",
    "data.train.datasets[].split": "Split to read (default train).",
    "data.train.datasets[].dataset_kwargs": "Prompt column, template, system prompt, ...",
    "data.train.datasets[].sample_count": "Rows to keep.",
    "data.train.datasets[].shuffle": "Shuffle before sample_count.",
    "data.train.datasets[].seed": "Seed of that shuffle (and of arithmetic_synthetic).",
    "data.validation.datasets": "Held-out prompts, evaluated every training.eval_steps.",
    "data.validation.datasets[].dataset_name": "Shipped name, file format, Oumi GRPO dataset (read by its registered class), local path or Hub id.",
    "data.validation.datasets[].dataset_path": "File or directory to read.",
    "data.validation.datasets[].subset": "Hub dataset configuration.",
    "data.validation.datasets[].split": "Split to read (default train).",
    "data.validation.datasets[].dataset_kwargs": "Prompt column, template, system prompt, ...",
    "data.validation.datasets[].sample_count": "Rows to keep.",
    "data.validation.datasets[].shuffle": "Shuffle before sample_count.",
    "data.validation.datasets[].seed": "Seed of that shuffle (and of arithmetic_synthetic).",
    "training.trainer_type": "MEGATRON_GRPO or MEGATRON_SFT.",
    "training.learning_rate": "Peak learning rate, reached after warmup.",
    "training.max_steps": "Optimizer steps to run (GRPO: one rollout batch each).",
    "training.num_train_epochs": "Used only when training.max_steps <= 0.",
    "training.gradient_accumulation_steps": (
        "Micro batches per step; derived by Megatron, so only checked (or used to derive "
        "megatron.global_batch_size when that is unset)."
    ),
    "training.output_dir": (
        "Root of all outputs; Megatron checkpoints go to <output_dir>/megatron_checkpoint."
    ),
    "training.save_steps": "Save a Megatron checkpoint every N steps; 0 disables.",
    "training.save_final_model": "Export an HF model at the end.",
    "training.resume_from_checkpoint": "Checkpoint directory to resume from.",
    "training.try_resume_from_last_checkpoint": "Resume from the newest checkpoint in output_dir.",
    "training.compile": (
        "Compile every transformer layer with torch.compile (one graph each; compiling takes "
        "~40 s per process on a GPU, again once when packed micro-batch lengths first change). "
        "Update 1.12x faster on GRPO-shaped packed micro-batches and 1.08x on 2,048-token rows "
        "of a 1.5B model on an H100 (docs/performance.md). With megatron.sequence_parallel the "
        "linear layers and their collectives, and in MoE layers the routing and experts, run "
        "eagerly between compiled pieces (docs/parallelism.md)."
    ),
    "training.seed": "Seed of Megatron's RNGs and, unless grpo.seed is set, of sampling.",
    "training.logging_steps": "Log metrics every N steps.",
    "training.run_name": "Run name for the metric sinks.",
    "training.enable_wandb": "Log to Weights & Biases.",
    "training.enable_tensorboard": "Log to TensorBoard (under training.logging_dir).",
    "training.logging_dir": "TensorBoard directory; defaults to <output_dir>/tensorboard.",
    "training.log_level": "Python log level of the trainer.",
    "training.eval_strategy": "'steps' evaluates data.validation every eval_steps; 'no' never.",
    "training.eval_steps": "Steps between evaluations (and after the last step).",
}

# Oumi field -> fix. Rejected when set to anything but Oumi's default.
REPLACED_OUMI_FIELDS: Final[dict[str, str]] = {
    "training.use_peft": "PEFT/LoRA is not supported by Megatron trainers; remove it",
    "training.enable_gradient_checkpointing": (
        "use megatron.transformer_config.recompute_granularity instead"
    ),
    "training.mixed_precision_dtype": "use megatron.transformer_config.params_dtype instead",
    "model.enable_liger_kernel": "Megatron uses its own fused kernels; remove it",
    "fsdp.enable_fsdp": "Megatron shards the model itself (megatron.*_parallel_size); remove it",
    "deepspeed.enable_deepspeed": "Megatron shards the model itself; remove it",
    "training.grpo.use_vllm": "use megatron.inference_backend: vllm instead",
    "training.grpo.vllm_mode": "use megatron.inference_backend instead",
    "training.grpo.vllm_gpu_memory_utilization": "remove it (TRL-only setting)",
    "training.grpo.rollout_function": "remove it (TRL-only setting)",
    "training.grpo.model_init_kwargs": "remove it (TRL-only setting)",
    "training.grpo.remove_unused_columns": "remove it (TRL-only setting)",
    "training.grpo.repetition_penalty": "remove it (not supported by MEGATRON_GRPO)",
    "model.model_max_length": ("use grpo.max_prompt_length and grpo.max_completion_length instead"),
    "model.attn_implementation": "Megatron picks its attention kernel; remove it",
    "training.per_device_eval_batch_size": (
        "evaluation generates with the rollout engines, which batch themselves; remove it"
    ),
    "training.enable_mlflow": "use training.enable_wandb or enable_tensorboard instead",
    "training.lr_scheduler_kwargs": "use megatron.optimizer_config (min_lr, ...) instead",
    "data.train.mixture_strategy": "datasets are concatenated; remove it",
    "data.train.datasets[].mixture_proportion": (
        "datasets are concatenated; remove it (use sample_count to balance)"
    ),
    "data.validation.mixture_strategy": "datasets are concatenated; remove it",
    "data.validation.datasets[].mixture_proportion": "datasets are concatenated; remove it",
}

# Refused with their own message (static_checks.py).
CHECKED_ELSEWHERE: Final = frozenset(
    {"fsdp.enable_fsdp", "deepspeed.enable_deepspeed", "training.optimizer"}
)
_LIST_ITEM = "[]"


def _leaves(obj, path: str):
    """(generic path, path with indices, owner, field name) for every leaf field of a
    dataclass instance; nested dataclasses and lists of them are walked."""
    import dataclasses

    for spec in dataclasses.fields(obj):
        value = getattr(obj, spec.name)
        here = f"{path}.{spec.name}"
        if dataclasses.is_dataclass(value):
            yield from _leaves(value, here)
        elif isinstance(value, list) and value and all(dataclasses.is_dataclass(v) for v in value):
            for i, item in enumerate(value):
                for generic, shown, owner, name in _leaves(item, here):
                    yield (generic.replace(here, here + _LIST_ITEM, 1),
                           shown.replace(here, f"{here}[{i}]", 1), owner, name)  # fmt: skip
        else:
            yield here, here, obj, spec.name


def oumi_leaf_paths(config) -> list[str]:
    """Generic paths of every leaf field of an Oumi ``TrainingConfig`` (its sections only)."""
    from oumi.core.configs import TrainingConfig

    return sorted({g for name in _sections() for g, *_ in _leaves(getattr(config, name), name)}
                  if isinstance(config, TrainingConfig) else set())  # fmt: skip


def _sections() -> tuple[str, ...]:
    import dataclasses

    from oumi.core.configs import TrainingConfig

    return tuple(f.name for f in dataclasses.fields(TrainingConfig))


def unused_oumi_fields(config, handled: frozenset[str]) -> list[str]:
    """A message per Oumi field of ``config`` set to a non-default value that the Megatron
    trainers do not read (``handled``: alias paths, checked elsewhere)."""
    from enum import Enum

    from oumi_megatron.config.schema import field_default

    problems = []
    for name in _sections():
        for generic, shown, owner, field in _leaves(getattr(config, name), name):
            if generic in READ_OUMI_FIELDS or generic in handled or generic in CHECKED_ELSEWHERE:
                continue
            value = getattr(owner, field)
            if value == field_default(owner, field):
                continue
            value = value.value if isinstance(value, Enum) else value
            fix = REPLACED_OUMI_FIELDS.get(generic, "remove it")
            problems.append(f"{shown} ({value!r}) is not used by Megatron trainers. Fix: {fix}.")
    return problems

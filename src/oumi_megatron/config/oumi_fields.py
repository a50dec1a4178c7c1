"""How the Megatron trainers treat Oumi's own fields (the contract documented for users).

Three kinds of Oumi field exist for a ``MEGATRON_*`` trainer:
- aliases of our fields (``aliases.ALIASES``): merged both ways;
- fields read with Oumi's meaning (``READ_OUMI_FIELDS``);
- fields with a Megatron-side replacement (``REPLACED_OUMI_FIELDS``): a non-default value is
  rejected at load time, because silently ignoring it would surprise.
Any other Oumi field is accepted and has no effect on Megatron trainers.
"""

from __future__ import annotations

from typing import Final

READ_OUMI_FIELDS: Final[dict[str, str]] = {
    "model.model_name": "HF model directory or Hub id to start from.",
    "model.tokenizer_name": "Tokenizer to use; defaults to model.model_name.",
    "model.chat_template": "Chat template applied to prompts.",
    "data.train.datasets": "Prompt (GRPO) or conversation (SFT) datasets.",
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
    "training.seed": "Seed of Megatron's RNGs and, unless grpo.seed is set, of sampling.",
    "training.logging_steps": "Log metrics every N steps.",
    "training.run_name": "Run name for the metric sinks.",
    "training.enable_wandb": "Log to Weights & Biases.",
    "training.enable_tensorboard": "Log to TensorBoard (under training.logging_dir).",
    "training.logging_dir": "TensorBoard directory; defaults to <output_dir>/tensorboard.",
    "training.log_level": "Python log level of the trainer.",
}

# Oumi field -> fix. Rejected when set to anything but Oumi's default.
REPLACED_OUMI_FIELDS: Final[dict[str, str]] = {
    "training.use_peft": "PEFT/LoRA is not supported by Megatron trainers; remove it",
    "training.enable_gradient_checkpointing": (
        "use megatron.transformer_config.recompute_granularity instead"
    ),
    "training.compile": "torch.compile is not supported by Megatron trainers; remove it",
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
}

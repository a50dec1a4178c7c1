"""Load-time checks on Oumi settings that Megatron trainers cannot honour."""

from __future__ import annotations

import pytest

from oumi_megatron.config import ConfigError


def _message(load, *overrides: str, text: str | None = None) -> str:
    with pytest.raises(ConfigError) as err:
        load(*overrides, text=text)
    return str(err.value)


def test_non_megatron_trainer(load) -> None:
    assert _message(load, "training.trainer_type=TRL_GRPO") == (
        "training.trainer_type (TRL_GRPO) is not a Megatron trainer; this config needs "
        "MEGATRON_GRPO or MEGATRON_SFT. Fix: set training.trainer_type: MEGATRON_GRPO."
    )


def test_fsdp_with_megatron(load) -> None:
    assert _message(load, "fsdp.enable_fsdp=true").startswith(
        "fsdp.enable_fsdp (true) cannot be combined with training.trainer_type MEGATRON_GRPO"
    )


def test_deepspeed_with_megatron(load) -> None:
    assert _message(load, "deepspeed.enable_deepspeed=true").startswith(
        "deepspeed.enable_deepspeed (true) cannot be combined with training.trainer_type "
        "MEGATRON_GRPO: Megatron shards the model itself. Fix: set "
        "deepspeed.enable_deepspeed: false."
    )


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("training.use_peft=true", "training.use_peft (True) is not used by Megatron trainers."),
        (
            "training.enable_gradient_checkpointing=true",
            "training.enable_gradient_checkpointing (True) is not used by Megatron trainers. "
            "Fix: use megatron.transformer_config.recompute_granularity instead.",
        ),
        (
            "training.mixed_precision_dtype=BF16",
            "training.mixed_precision_dtype ('bf16') is not used by Megatron trainers. "
            "Fix: use megatron.transformer_config.params_dtype instead.",
        ),
        (
            "training.grpo.use_vllm=true",
            "training.grpo.use_vllm (True) is not used by Megatron trainers. "
            "Fix: use megatron.inference_backend: vllm instead.",
        ),
        (
            "training.grpo.repetition_penalty=1.1",
            "training.grpo.repetition_penalty (1.1) is not used by Megatron trainers.",
        ),
    ],
)
def test_replaced_oumi_field(load, override: str, expected: str) -> None:
    assert _message(load, override).startswith(expected)


def test_liger_kernel(load) -> None:
    assert _message(load, "model.enable_liger_kernel=true").startswith(
        "model.enable_liger_kernel (True) is not used by Megatron trainers. "
        "Fix: Megatron uses its own fused kernels; remove it."
    )


def test_non_adam_optimizer(load) -> None:
    assert _message(load, "training.optimizer=sgd").startswith(
        "training.optimizer ('sgd') is not supported: Megatron trainers use Megatron's AdamW."
    )


def test_grpo_without_reward(load, grpo_yaml: str) -> None:
    text = grpo_yaml.replace("  reward_functions: [gsm8k_accuracy]\n", "")
    assert _message(load, text=text).startswith(
        "grpo.reward_functions is empty; MEGATRON_GRPO needs at least one reward."
    )


def test_sft_needs_no_reward(load, grpo_yaml: str) -> None:
    text = grpo_yaml.replace("  reward_functions: [gsm8k_accuracy]\n", "")
    assert load("training.trainer_type=MEGATRON_SFT", text=text).grpo.reward_functions == []


def test_packing_budget_below_one_sequence(load) -> None:
    message = _message(
        load,
        "megatron.enable_sequence_packing=true",
        "megatron.max_tokens_per_microbatch=512",
    )
    assert message.startswith(
        "megatron.max_tokens_per_microbatch (512) is smaller than one full sequence: "
        "grpo.max_prompt_length + grpo.max_completion_length = 768."
    )


def test_min_lr_above_lr(load) -> None:
    assert _message(load, "megatron.optimizer_config.min_lr=1e-3").startswith(
        "megatron.optimizer_config.min_lr (0.001) exceeds training.learning_rate (1e-06)"
    )


def test_oumi_post_init_still_runs(load) -> None:
    # Oumi's own TrainingConfig.__post_init__ rule, wrapped into our error type.
    assert _message(load, "training.max_steps=0", "training.num_train_epochs=0").startswith(
        "At least one of max_steps and num_train_epochs must be positive"
    )


def test_async_checkpoint_is_accepted(load) -> None:
    # Implemented (training/checkpoint.py): no longer refused at load time.
    cfg = load("megatron.checkpoint_config.use_async_checkpoint=true")
    assert cfg.megatron.checkpoint_config.use_async_checkpoint is True


def test_truncated_sampling_is_accepted(load) -> None:
    # Implemented (algorithms/truncation.py): the trainer's log-probs use the same top-k/top-p.
    cfg = load("grpo.top_p=0.9", "grpo.top_k=20")
    assert (cfg.grpo.top_p, cfg.grpo.top_k) == (0.9, 20)


def test_async_grpo_needs_rollout_processes(load) -> None:
    assert _message(load, "grpo.max_off_policy_steps=1") == (
        "grpo.max_off_policy_steps (1) generates the next step while this one trains, which "
        "needs rollout in processes of their own; weight_sync_method 'auto' generates in the "
        "trainer's processes. Fix: set megatron.weight_sync_method: nccl (gloo on CPU), or "
        "max_off_policy_steps: 0."
    )
    assert "cannot be combined" in _message(
        load, "grpo.max_off_policy_steps=1", "megatron.weight_sync_method=gloo",
        "grpo.dynamic_sampling=true",
    )  # fmt: skip
    assert _message(load, "grpo.max_off_policy_steps=2").startswith(
        "Invalid value for 'grpo.max_off_policy_steps': 2. Input should be less than or equal to 1."
    )

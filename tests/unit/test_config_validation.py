"""validate_config: world size, model shape, batch sizes, model path, Oumi's finalize."""

from __future__ import annotations

from pathlib import Path

import pytest

from oumi_megatron.config import ConfigError, ModelShape, load_config, validate_config

DENSE = ModelShape(
    num_layers=24, num_attention_heads=16, num_kv_heads=4, num_experts=None, vocab_size=32000
)
MOE = ModelShape(
    num_layers=24, num_attention_heads=16, num_kv_heads=4, num_experts=60, vocab_size=32000
)


@pytest.fixture
def check(load, tiny_model_dir: Path):
    """``check(world_size, *overrides, shape=DENSE)`` -> ValidatedLayout (local model path)."""

    def _check(world_size: int, *overrides: str, shape: ModelShape = DENSE, finalize: bool = False):
        cfg = load(f"model.model_name={tiny_model_dir}", *overrides)
        return validate_config(cfg, world_size, shape, run_oumi_finalize=finalize)

    return _check


def _message(check, world_size: int, *overrides: str, shape: ModelShape = DENSE) -> str:
    with pytest.raises(ConfigError) as err:
        check(world_size, *overrides, shape=shape)
    return str(err.value)


def test_valid_layout(check) -> None:
    layout = check(8)
    assert (layout.data_parallel_size, layout.global_batch_size) == (4, 32)
    assert (layout.num_microbatches, layout.prompts_per_step) == (4, 8)


def test_oumi_finalize_runs(check) -> None:
    assert check(8, finalize=True).data_parallel_size == 4


def test_empty_training_data_is_refused(check, load, tiny_model_dir: Path) -> None:
    cfg = load(f"model.model_name={tiny_model_dir}", "data.train.datasets=[]")
    with pytest.raises(ConfigError, match=r"data.train.datasets is empty\. Fix: list"):
        validate_config(cfg, 8, DENSE)


def test_oumi_finalize_error_is_wrapped(check, load, tiny_model_dir: Path, monkeypatch) -> None:
    from oumi.exceptions import OumiConfigError

    cfg = load(f"model.model_name={tiny_model_dir}")

    def finalize():
        raise OumiConfigError("At least one training dataset is required")

    monkeypatch.setattr(cfg, "finalize_and_validate", finalize)
    with pytest.raises(ConfigError, match="required \\(raised by Oumi's finalize_and_validate"):
        validate_config(cfg, 8, DENSE)


def test_world_not_divisible_by_model_parallel(check) -> None:
    message = _message(
        check,
        16,
        "megatron.tensor_model_parallel_size=4",
        "megatron.pipeline_model_parallel_size=8",
    )
    # (The expert layout, TP × PP here, fails too: its message comes second.)
    assert message.startswith("2 problems in the config:\n  1. ")
    assert message.removeprefix("2 problems in the config:\n  1. ").startswith(
        "world_size (16) must be divisible by the product of all model parallel sizes (32): "
        "tensor_model_parallel_size (4) × pipeline_model_parallel_size (8) × "
        "context_parallel_size (1). Fix:"
    )


def test_expert_parallel_on_dense_model(check) -> None:
    assert _message(check, 8, "megatron.expert_model_parallel_size=2").startswith(
        "megatron.expert_model_parallel_size (2) > 1 but the model is dense (no experts)."
    )


def test_experts_not_divisible_by_ep(check) -> None:
    message = _message(check, 8, "megatron.expert_model_parallel_size=8", shape=MOE)
    assert message.startswith(
        "The model's number of experts (60) must be divisible by "
        "megatron.expert_model_parallel_size (8). Fix: use one of 1, 2, 3, 4, 5, 6, 10, 12, "
        "15, 20, 30, 60."
    )


def test_expert_grid_does_not_fit_world(check) -> None:
    # ETP 2 × EP 4 × PP 1 = 8 ranks per expert replica; 12 ranks is not a multiple.
    message = _message(
        check,
        12,
        "megatron.tensor_model_parallel_size=1",
        "megatron.expert_tensor_parallel_size=2",
        "megatron.expert_model_parallel_size=4",
        "megatron.global_batch_size=48",
        shape=MOE,
    )
    assert message.startswith(
        "world_size (12) must be divisible by expert_tensor_parallel_size (2) × "
        "expert_model_parallel_size (4) × pipeline_model_parallel_size (1) = 8"
    )


def test_valid_moe_layout(check) -> None:
    tp1 = "megatron.tensor_model_parallel_size=1"
    layout = check(8, tp1, "megatron.expert_model_parallel_size=4", shape=MOE)
    assert layout.expert_data_parallel_size == 2


def test_moe_with_tensor_parallelism_needs_sequence_parallelism(check) -> None:
    # Megatron's MoE layer refuses TP without sequence parallelism at the first training step.
    message = _message(check, 8, "megatron.expert_model_parallel_size=2", shape=MOE)
    assert message.startswith(
        "megatron.tensor_model_parallel_size (2) > 1 with a mixture-of-experts model needs "
        "megatron.sequence_parallel: true"
    )
    assert "Fix: set megatron.sequence_parallel: true, or set " in message
    layout = check(
        8, "megatron.expert_model_parallel_size=2", "megatron.sequence_parallel=true", shape=MOE
    )
    assert layout.data_parallel_size == 4  # world 8 over TP2


def test_compiled_layers_with_sequence_parallelism_are_accepted(check) -> None:
    # The sequence-parallel linear layers run eagerly inside compiled layers (model/compile.py;
    # tests/integration/test_update_invariance.py compares the gradients).
    sp = ("megatron.tensor_model_parallel_size=2", "megatron.sequence_parallel=true")
    assert check(8, *sp, "training.compile=true").data_parallel_size == 4


def test_attention_heads_not_divisible_by_tp(check) -> None:
    shape = ModelShape(
        num_layers=24, num_attention_heads=14, num_kv_heads=2, num_experts=None, vocab_size=1
    )
    assert _message(
        check,
        8,
        "megatron.tensor_model_parallel_size=4",
        "megatron.global_batch_size=16",
        shape=shape,
    ) == (
        "The model's attention heads (14) must be divisible by "
        "megatron.tensor_model_parallel_size (4): each tensor-parallel rank holds whole heads. "
        "Fix: use a tensor_model_parallel_size in 1, 2, 7, 14."
    )


def test_kv_heads_not_divisible_by_tp(check) -> None:
    assert _message(
        check, 8, "megatron.tensor_model_parallel_size=8", "megatron.global_batch_size=8"
    ).startswith(
        "The model's key/value heads (4) must be divisible by "
        "megatron.tensor_model_parallel_size (8)"
    )


def test_layers_not_divisible_by_pp(check) -> None:
    shape = ModelShape(
        num_layers=30, num_attention_heads=16, num_kv_heads=4, num_experts=None, vocab_size=1
    )
    message = _message(
        check,
        8,
        "megatron.pipeline_model_parallel_size=4",
        "megatron.global_batch_size=8",
        shape=shape,
    )
    assert message.startswith(
        "The model's 30 layers cannot be split over pipeline_model_parallel_size (4): the "
        "model's layers (30) must be divisible by pipeline_model_parallel_size (4). Fix: set "
        "megatron.transformer_config account_for_embedding_in_pipeline_split: true, "
        "account_for_loss_in_pipeline_split: true"
    )


def test_layers_not_divisible_by_pp_times_vpp(check) -> None:
    message = _message(
        check,
        8,
        "megatron.pipeline_model_parallel_size=4",
        "megatron.virtual_pipeline_model_parallel_size=4",
        "megatron.global_batch_size=8",
    )
    assert message.startswith(
        "The model's 24 layers cannot be split over pipeline_model_parallel_size (4), "
        "virtual_pipeline_model_parallel_size (4): pipeline stage 0 holds 6 layer(s), not "
        "divisible by virtual_pipeline_model_parallel_size (4). Fix: set "
        "megatron.transformer_config num_layers_in_first_pipeline_stage: 4, "
        "num_layers_in_last_pipeline_stage: 4 (oumi-megatron plan"
    )


def test_vpp_with_single_pipeline_stage(check) -> None:
    assert _message(check, 8, "megatron.virtual_pipeline_model_parallel_size=2").startswith(
        "megatron.virtual_pipeline_model_parallel_size (2) needs "
        "megatron.pipeline_model_parallel_size > 1 (got 1)"
    )


def test_recompute_more_layers_than_a_stage_has(check) -> None:
    message = _message(
        check,
        8,
        "megatron.pipeline_model_parallel_size=2",
        "megatron.global_batch_size=16",
        "megatron.transformer_config.recompute_granularity=full",
        "megatron.transformer_config.recompute_method=block",
        "megatron.transformer_config.recompute_num_layers=13",
    )
    assert message.startswith(
        "megatron.transformer_config.recompute_num_layers (13) exceeds the layers per "
        "pipeline stage (12)."
    )


def test_global_batch_not_divisible_by_micro_times_dp(check) -> None:
    # DP = 8 / TP 2 = 4; micro 2 × DP 4 = 8 does not divide 36.
    assert _message(check, 8, "megatron.global_batch_size=36").startswith(
        "megatron.global_batch_size (36) must be divisible by megatron.micro_batch_size (2) × "
        "data-parallel size (4) = 8. Fix: use a multiple of 8, e.g. 32."
    )


def test_gradient_accumulation_disagrees(check) -> None:
    assert _message(check, 8, "training.gradient_accumulation_steps=2") == (
        "training.gradient_accumulation_steps (2) disagrees with megatron: global_batch_size / "
        "(micro_batch_size × data-parallel size) = 32 / (2 × 4) = 4. Fix: remove "
        "training.gradient_accumulation_steps (Megatron derives it) or set it to 4."
    )


def test_gradient_accumulation_that_agrees(check) -> None:
    assert check(8, "training.gradient_accumulation_steps=4").num_microbatches == 4


def test_global_batch_derived_from_gradient_accumulation(check) -> None:
    layout = check(8, "megatron.global_batch_size=null", "training.gradient_accumulation_steps=2")
    assert (layout.global_batch_size, layout.num_microbatches) == (16, 2)


def test_global_batch_not_multiple_of_num_generations(check) -> None:
    assert _message(check, 8, "grpo.num_generations=3").startswith(
        "megatron.global_batch_size (32) must be a multiple of grpo.num_generations (3) so "
        "every optimizer step sees whole prompt groups."
    )


def test_prompts_per_step_not_whole_optimizer_steps(check) -> None:
    assert _message(check, 8, "grpo.prompts_per_step=12").startswith(
        "grpo.prompts_per_step (12) × grpo.num_generations (4) = 48 sequences per step must be "
        "a multiple of megatron.global_batch_size (32)"
    )


def test_prompts_per_step_with_several_optimizer_steps(check) -> None:
    assert check(8, "grpo.prompts_per_step=16").prompts_per_step == 16


def test_missing_local_model_path(load) -> None:
    cfg = load("model.model_name=/no/such/model")
    with pytest.raises(ConfigError) as err:
        validate_config(cfg, 8, DENSE)
    assert str(err.value).startswith(
        "model.model_name ('/no/such/model') looks like a local path but does not exist."
    )


def test_hub_id_is_not_checked_on_disk(load) -> None:
    cfg = load()  # Qwen/Qwen2.5-0.5B-Instruct: one slash, a Hub id.
    assert validate_config(cfg, 8, DENSE, run_oumi_finalize=False).data_parallel_size == 4


def test_edited_config_is_checked_again(check, load, tiny_model_dir: Path) -> None:
    cfg = load(f"model.model_name={tiny_model_dir}")
    cfg.megatron.ddp_config.overlap_param_gather = True  # bypasses MegatronParams' checks
    with pytest.raises(ConfigError, match="overlap_param_gather \\(true\\) requires"):
        validate_config(cfg, 8, DENSE, run_oumi_finalize=False)


def test_model_shape_from_model_dir(tiny_model_dir: Path) -> None:
    assert ModelShape.from_model_dir(tiny_model_dir) == ModelShape(
        num_layers=24,
        num_attention_heads=16,
        num_kv_heads=4,
        num_experts=None,
        vocab_size=32000,
        max_positions=2048,
    )


def test_model_shape_from_dir_without_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"No config.json in '{tmp_path}'"):
        ModelShape.from_model_dir(tmp_path)


def test_model_shape_of_moe_configs() -> None:
    from transformers import MixtralConfig, Qwen2MoeConfig

    mixtral = MixtralConfig(num_hidden_layers=2, num_local_experts=8, num_key_value_heads=8)
    assert ModelShape.from_hf_config(mixtral).num_experts == 8
    qwen = Qwen2MoeConfig(num_hidden_layers=2, num_experts=60)
    assert ModelShape.from_hf_config(qwen).num_experts == 60


def test_tiny_convert_recipe_validates_on_one_rank(tiny_model_dir: Path) -> None:
    recipe = Path(__file__).resolve().parents[2] / "configs" / "recipes" / "tiny_convert_cpu.yaml"
    cfg = load_config(recipe, [f"model.model_name={tiny_model_dir}"])
    shape = ModelShape.from_model_dir(tiny_model_dir)
    layout = validate_config(cfg, 1, shape, run_oumi_finalize=False)
    assert (layout.data_parallel_size, layout.num_microbatches) == (1, 1)
    assert cfg.megatron.transformer_config.resolved_params_dtype("cpu") == "fp32"


def test_rollout_replicas_must_fit_a_node(check, monkeypatch) -> None:
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert check(8, "megatron.rollout_tensor_parallel_size=4").world_size == 8
    assert _message(check, 8, "megatron.rollout_tensor_parallel_size=8").startswith(
        "megatron.rollout_tensor_parallel_size (8) must divide the processes per node (4) and "
        "the world size (8): a rollout replica is that many consecutive ranks of one node. "
        "Fix: use one of 1, 2, 4."
    )


def test_grpo_lengths_are_checked_for_grpo_only(check) -> None:
    """Conversion recipes (MEGATRON_SFT) keep GRPO's default lengths (512 + 256), which a
    512-position model cannot generate but can convert and verify."""
    short = ModelShape(
        num_layers=24, num_attention_heads=16, num_kv_heads=4, num_experts=None,
        vocab_size=32000, max_positions=512,
    )  # fmt: skip
    check(8, "training.trainer_type=MEGATRON_SFT", shape=short)
    message = _message(check, 8, "grpo.max_prompt_length=600", shape=short)
    assert "Fix: lower grpo.max_prompt_length below 512" in message
    message = _message(check, 8, shape=short)
    assert "Fix: lower grpo.max_completion_length to at most 0" not in message
    assert "Fix: lower grpo.max_prompt_length below 512" in message

"""MegatronParams: field ranges, cross-field rules, helpers."""

from __future__ import annotations

import pytest

from oumi_megatron.config import ConfigError, MegatronParams
from oumi_megatron.config.megatron_sections import TransformerConfig
from oumi_megatron.config.pydantic_errors import validate_section


def _error(**fields) -> str:
    with pytest.raises(ConfigError) as err:
        validate_section(fields, MegatronParams, "megatron")
    return str(err.value)


def test_defaults_are_a_single_rank_layout() -> None:
    params = MegatronParams()
    assert params.model_parallel_size == 1
    assert params.data_parallel_size(8) == 8


def test_data_parallel_size() -> None:
    params = MegatronParams(
        tensor_model_parallel_size=2, pipeline_model_parallel_size=2, context_parallel_size=2
    )
    assert params.data_parallel_size(16) == 2


def test_data_parallel_size_indivisible_world() -> None:
    params = MegatronParams(
        tensor_model_parallel_size=4, pipeline_model_parallel_size=4, context_parallel_size=2
    )
    with pytest.raises(ConfigError) as err:
        params.data_parallel_size(16)
    assert str(err.value).startswith(
        "world_size (16) must be divisible by the product of all model parallel sizes (32): "
        "tensor_model_parallel_size (4) × pipeline_model_parallel_size (4) × "
        "context_parallel_size (2). Fix: launch a multiple of 32 ranks"
    )


def test_parallel_size_below_one() -> None:
    assert _error(tensor_model_parallel_size=0) == (
        "Invalid value for 'megatron.tensor_model_parallel_size': 0. Input should be greater "
        "than or equal to 1. Fix: set 'megatron.tensor_model_parallel_size' to a valid value "
        "(Tensor parallel size (TP).)."
    )


def test_strict_types() -> None:
    assert "Input should be a valid integer" in _error(micro_batch_size="4")
    assert "Input should be a valid boolean" in _error(enable_weight_sync=1)


def test_offload_fraction_range() -> None:
    message = _error(optimizer_config={"optimizer_offload_fraction": 1.5})
    assert message.startswith(
        "Invalid value for 'megatron.optimizer_config.optimizer_offload_fraction': 1.5. "
        "Input should be less than or equal to 1"
    )


def test_unknown_choice() -> None:
    message = _error(weight_sync_method="rdma")
    assert message.startswith(
        "Invalid value for 'megatron.weight_sync_method': 'rdma'. Input should be 'auto', "
        "'inprocess', 'nccl', 'gloo' or 'checkpoint'."
    )


def test_subsection_must_be_a_mapping() -> None:
    assert _error(ddp_config=3).startswith("'megatron.ddp_config' must be a mapping of settings")


def test_empty_subsection_means_defaults() -> None:
    assert (
        validate_section(
            {"ddp_config": None}, MegatronParams, "megatron"
        ).ddp_config.overlap_grad_reduce
        is False
    )


def test_vpp_without_pipeline() -> None:
    assert _error(virtual_pipeline_model_parallel_size=2).startswith(
        "megatron.virtual_pipeline_model_parallel_size (2) needs "
        "megatron.pipeline_model_parallel_size > 1 (got 1)"
    )


def test_packing_budget_without_packing() -> None:
    assert _error(max_tokens_per_microbatch=4096).startswith(
        "megatron.max_tokens_per_microbatch (4096) only applies with "
        "megatron.enable_sequence_packing: true (got false)."
    )


def test_overlap_param_gather_needs_distributed_optimizer() -> None:
    message = _error(ddp_config={"overlap_param_gather": True, "overlap_grad_reduce": True})
    assert message.startswith(
        "megatron.ddp_config.overlap_param_gather (true) requires "
        "megatron.ddp_config.use_distributed_optimizer: true (got false)"
    )


def test_overlap_param_gather_needs_overlap_grad_reduce() -> None:
    message = _error(ddp_config={"overlap_param_gather": True, "use_distributed_optimizer": True})
    assert message.startswith(
        "megatron.ddp_config.overlap_param_gather (true) requires "
        "megatron.ddp_config.overlap_grad_reduce: true (got false)"
    )


def test_cpu_overlap_needs_offload() -> None:
    message = _error(optimizer_config={"overlap_cpu_optimizer_d2h_h2d": True})
    assert message.startswith(
        "megatron.optimizer_config.overlap_cpu_optimizer_d2h_h2d (true) requires "
        "megatron.optimizer_config.optimizer_cpu_offload: true (got false)."
    )


def test_offload_of_nothing() -> None:
    message = _error(
        optimizer_config={"optimizer_cpu_offload": True, "optimizer_offload_fraction": 0.0}
    )
    assert message.startswith(
        "megatron.optimizer_config.optimizer_offload_fraction (0.0) offloads nothing"
    )


def test_two_warmups() -> None:
    message = _error(optimizer_config={"lr_warmup_steps": 10, "lr_warmup_fraction": 0.1})
    assert message.startswith(
        "megatron.optimizer_config.lr_warmup_steps (10) and "
        "megatron.optimizer_config.lr_warmup_fraction (0.1) are both set"
    )


def test_recompute_method_needs_full() -> None:
    message = _error(transformer_config={"recompute_method": "uniform"})
    assert message.startswith(
        "megatron.transformer_config.recompute_method ('uniform') requires "
        "megatron.transformer_config.recompute_granularity: full (got None)."
    )


def test_full_recompute_needs_method_and_layers() -> None:
    message = _error(transformer_config={"recompute_granularity": "full"})
    assert message.startswith(
        "megatron.transformer_config.recompute_granularity 'full' needs "
        "megatron.transformer_config.recompute_method (got None)"
    )


def test_selective_recompute_rejects_num_layers() -> None:
    message = _error(
        transformer_config={"recompute_granularity": "selective", "recompute_num_layers": 2}
    )
    assert message.startswith(
        "megatron.transformer_config.recompute_num_layers (2) requires "
        "megatron.transformer_config.recompute_granularity: full (got 'selective')."
    )


def test_recompute_modules_need_selective() -> None:
    message = _error(transformer_config={"recompute_modules": ["mlp"]})
    assert message.startswith(
        "megatron.transformer_config.recompute_modules (['mlp']) requires "
        "megatron.transformer_config.recompute_granularity: selective (got None)."
    )


def test_unknown_recompute_module() -> None:
    message = _error(
        transformer_config={"recompute_granularity": "selective", "recompute_modules": ["attn"]}
    )
    assert message.startswith(
        "Invalid value for 'megatron.transformer_config.recompute_modules[0]': 'attn'."
    )


def test_weight_sync_method_without_sync() -> None:
    assert _error(enable_weight_sync=False, weight_sync_method="nccl").startswith(
        "megatron.weight_sync_method ('nccl') has no effect with "
        "megatron.enable_weight_sync: false."
    )


def test_valid_recompute_settings_pass() -> None:
    full = {"recompute_granularity": "full", "recompute_method": "block", "recompute_num_layers": 2}
    selective = {"recompute_granularity": "selective", "recompute_modules": ["core_attn", "mlp"]}
    for transformer in (full, selective):
        validate_section({"transformer_config": transformer}, MegatronParams, "megatron")


@pytest.mark.parametrize(
    ("dtype", "device", "expected"),
    [("auto", "cuda", "bf16"), ("auto", "cpu", "fp32"), ("fp16", "cpu", "fp16")],
)
def test_params_dtype_resolution(dtype: str, device: str, expected: str) -> None:
    assert TransformerConfig(params_dtype=dtype).resolved_params_dtype(device) == expected


def test_checkpoint_dir() -> None:
    assert MegatronParams().checkpoint_dir("out/run/") == "out/run/megatron_checkpoint"
    assert MegatronParams(megatron_checkpoint_dir="/ckpt").checkpoint_dir("out") == "/ckpt"


def test_rollout_workers_need_a_separate_process_method() -> None:
    message = _error(rollout_workers=2)
    assert message.startswith("megatron.rollout_workers (2) / megatron.rollout_devices (None)")
    assert "Fix: set megatron.weight_sync_method: gloo (or nccl)" in message


def test_rollout_devices_one_per_worker() -> None:
    message = _error(weight_sync_method="gloo", rollout_workers=2, rollout_devices=["cpu"])
    assert "megatron.rollout_devices has 1 entries but megatron.rollout_workers is 2" in message


def test_nccl_rollout_devices_must_be_gpus() -> None:
    message = _error(weight_sync_method="nccl", rollout_devices=["cpu"])
    assert "weight_sync_method 'nccl' needs GPU devices ('cuda:N')" in message


def test_rollout_devices_resolution() -> None:
    from oumi_megatron.launch import resolve_rollout_devices

    assert resolve_rollout_devices("gloo", 2, None, 4, 0) == ["cpu", "cpu"]
    assert resolve_rollout_devices("nccl", 2, None, 2, 4) == ["cuda:2", "cuda:3"]
    assert resolve_rollout_devices("nccl", 1, ["cuda:3"], 1, 4) == ["cuda:3"]
    with pytest.raises(ConfigError, match=r"overlap the trainer's GPUs on this node \(cuda:0..1\)"):
        resolve_rollout_devices("nccl", 1, ["cuda:1"], 2, 4)
    with pytest.raises(ConfigError, match=r"needs GPUs \['cuda:4'\], but this node has 4"):
        resolve_rollout_devices("nccl", 1, None, 4, 4)


def test_rollout_replicas_and_nodes_need_the_right_weight_sync() -> None:
    message = _error(weight_sync_method="gloo", rollout_tensor_parallel_size=2)
    assert message.startswith("megatron.rollout_tensor_parallel_size (2) splits the trainer's")
    assert "Fix: remove megatron.rollout_tensor_parallel_size" in message
    message = _error(rollout_nodes=1)
    assert message.startswith("megatron.rollout_nodes (1) runs rollout workers on nodes")
    assert "Fix: set megatron.weight_sync_method: nccl (gloo on CPU)" in message
    message = _error(rollout_nodes=1, weight_sync_method="gloo", rollout_workers=2)
    assert "megatron.rollout_workers / megatron.rollout_devices do not apply" in message


def test_job_roles_split_the_last_nodes_off(monkeypatch) -> None:
    from oumi_megatron.launch import job_roles

    monkeypatch.setenv("WORLD_SIZE", "16")
    monkeypatch.setenv("GROUP_WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "11")
    roles = job_roles(1)
    assert (roles.trainer_world_size, roles.rollout_workers) == (12, 4)
    assert not roles.is_rollout_worker
    monkeypatch.setenv("RANK", "13")
    assert job_roles(1).is_rollout_worker and job_roles(1).worker_index == 1
    assert job_roles(0).trainer_world_size == 16
    with pytest.raises(ConfigError, match=r"rollout_nodes \(4\) must leave at least one"):
        job_roles(4)

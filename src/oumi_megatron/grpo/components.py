"""Build what a GRPO run needs from a validated `RunSetup`: policy, reference, rollout engine,
weight sender, prompts, rewards, metric sinks. Collective where Megatron is involved."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from oumi_megatron.launch import RunSetup
from oumi_megatron.parallel.ranks import is_rank0, local_world_size
from oumi_megatron.training.policy import MegatronPolicy


@dataclass
class GrpoComponents:
    loaded: object  # LoadedModel of the policy
    policy: MegatronPolicy
    reference: MegatronPolicy | None
    engine: object | None  # rollout engine (global rank 0 only)
    sender: object | None  # weight sender feeding the engine (global rank 0 only)
    tokenizer: object
    loader: object  # PromptDataLoader
    reward_functions: list
    reward_weights: list[float] | None


def build_policy(setup: RunSetup):
    from megatron.core.distributed import DistributedDataParallelConfig

    from oumi_megatron.model.bridge import load_megatron_model
    from oumi_megatron.training.optimizer import OptimizerSettings, build_optimizer

    cfg = setup.cfg
    ddp = cfg.megatron.ddp_config
    ddp_config = DistributedDataParallelConfig(
        grad_reduce_in_fp32=ddp.grad_reduce_in_fp32,
        overlap_grad_reduce=ddp.overlap_grad_reduce,
        overlap_param_gather=ddp.overlap_param_gather,
        average_in_collective=ddp.average_in_collective,
        use_distributed_optimizer=ddp.use_distributed_optimizer,
    )
    loaded = load_megatron_model(
        str(setup.hf_dir),
        setup.megatron_checkpoint_dir,
        setup.layout,
        params_dtype=setup.params_dtype,
        trust_remote_code=cfg.model.trust_remote_code,
        configure=lambda provider: _configure_training(provider, cfg),
        ddp_config=ddp_config,
    )
    from oumi_megatron.grpo.update_phase import optimizer_steps_per_grpo_step

    per_step = optimizer_steps_per_grpo_step(cfg, setup.validated)
    settings = OptimizerSettings.from_config(cfg, optimizer_steps_per_step=per_step)
    optimizer, scheduler = build_optimizer(loaded.chunks, settings, setup.params_dtype)
    policy = MegatronPolicy(
        loaded.chunks, cfg.grpo.temperature, optimizer, scheduler,
        top_k=cfg.grpo.top_k, top_p=cfg.grpo.top_p,
    )  # fmt: skip
    return loaded, policy


def _configure_training(provider, cfg) -> None:
    transformer = cfg.megatron.transformer_config
    provider.calculate_per_token_loss = True  # see training/policy.py: losses are pre-normalised
    provider.recompute_granularity = transformer.recompute_granularity
    provider.recompute_method = transformer.recompute_method
    provider.recompute_num_layers = transformer.recompute_num_layers
    if transformer.recompute_modules is not None:
        provider.recompute_modules = list(transformer.recompute_modules)


def build_reference(setup: RunSetup) -> MegatronPolicy | None:
    """A frozen copy of the initial weights, only when the KL term is on (grpo.beta > 0)."""
    if setup.cfg.grpo.beta <= 0:
        return None
    from oumi_megatron.model.bridge import load_megatron_model

    loaded = load_megatron_model(
        str(setup.hf_dir), setup.megatron_checkpoint_dir, setup.layout, setup.params_dtype
    )
    for chunk in loaded.chunks:
        chunk.requires_grad_(False)
    # No top-k/top-p: the KL is between full distributions (see MegatronPolicy).
    return MegatronPolicy(loaded.chunks, setup.cfg.grpo.temperature)


def build_engine(setup: RunSetup):
    """The rollout engine and the weight sender feeding it (global rank 0; None elsewhere)."""
    if not is_rank0():
        return None, None
    from oumi_megatron.rollout.weight_sync import make_weight_sender

    backend = setup.cfg.megatron.inference_backend
    if backend == "auto":
        backend = "vllm" if torch.cuda.is_available() else "torch"
    method = setup.cfg.megatron.weight_sync_method
    spec = engine_spec(setup, backend, "cuda" if torch.cuda.is_available() else "cpu")
    if method in ("gloo", "nccl"):
        return _remote_engines(setup, spec, method)
    from oumi_megatron.rollout.factory import build_engine as build_rollout_engine

    engine = build_rollout_engine(spec)
    bucket_bytes = setup.cfg.megatron.weight_sync_bucket_size_mb << 20
    if method in ("auto", "inprocess"):
        sender = make_weight_sender("inprocess", engine=engine, bucket_bytes=bucket_bytes)
    elif method == "checkpoint":
        directory = Path(setup.cfg.training.output_dir) / "weight_sync"
        sender = _CheckpointToEngine(
            make_weight_sender("checkpoint", directory=directory, bucket_bytes=bucket_bytes),
            directory,
            engine,
        )
    return engine, sender


def engine_spec(setup: RunSetup, backend: str, device: str):
    """How to build the rollout engine: the trainer's dtype (so engine and trainer log-probs
    compare like for like) and, for vLLM, the recipe's memory and compile settings."""
    from oumi_megatron.rollout.factory import EngineSpec, dtype_name

    cfg, m = setup.cfg, setup.cfg.megatron
    return EngineSpec(
        backend,
        str(setup.hf_dir),
        device,
        dtype_name(setup.params_dtype),
        cfg.sampling_seed,
        cfg.model.trust_remote_code,
        vllm_gpu_memory_utilization=m.vllm_gpu_memory_utilization,
        vllm_enforce_eager=m.vllm_enforce_eager,
        # rollouts never need more; vLLM would otherwise size for the model's full context
        max_model_len=cfg.grpo.max_prompt_length + cfg.grpo.max_completion_length,
    )


def _remote_engines(setup: RunSetup, spec, method: str):
    """Rollout processes fed over a gloo/NCCL broadcast group (started by global rank 0)."""
    from dataclasses import replace

    from oumi_megatron.rollout.remote import RemoteRolloutEngines

    m, devices = setup.cfg.megatron, setup.rollout_devices  # resolved and checked at start-up
    specs = [replace(spec, device=device) for device in devices]
    trainer_gpus = {f"cuda:{i}" for i in range(local_world_size())} | {"cuda"}
    engine = RemoteRolloutEngines(specs, method, m.weight_sync_bucket_size_mb << 20,
                                  colocated=bool(trainer_gpus & set(devices)))  # fmt: skip
    return engine, engine.weight_sender()


class _CheckpointToEngine:
    """Checkpoint transport with the engine in this process: write the version, then load it."""

    def __init__(self, sender, directory: Path, engine):
        from oumi_megatron.rollout.weight_sync import make_weight_receiver

        self.sender, self.engine = sender, engine
        self.receiver = make_weight_receiver("checkpoint", directory=directory)

    def send(self, named_tensors):
        self.sender.send(named_tensors)
        return self.receiver.receive_into(self.engine)


def build_prompts(setup: RunSetup, prompts_per_step: int):
    from transformers import AutoTokenizer

    from oumi_megatron.data.loader import PromptDataLoader
    from oumi_megatron.data.prompts import load_prompt_datasets

    cfg = setup.cfg
    tokenizer = AutoTokenizer.from_pretrained(
        cfg.model.tokenizer_name or str(setup.hf_dir), trust_remote_code=cfg.model.trust_remote_code
    )
    dataset = load_prompt_datasets(cfg.data.train.datasets, tokenizer, cfg.grpo.max_prompt_length)
    loader = PromptDataLoader(dataset, prompts_per_step, seed=cfg.sampling_seed)
    return tokenizer, loader


def build_rewards(setup: RunSetup):
    from oumi_megatron.rewards import resolve_reward_functions

    grpo = setup.cfg.grpo
    return resolve_reward_functions(grpo.reward_functions, grpo.reward_function_kwargs)

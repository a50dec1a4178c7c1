"""Build what a GRPO run needs from a validated `RunSetup`: policy, reference, the rollout
topology and this rank's engine, prompts, rewards. Collective where Megatron is involved."""

from __future__ import annotations

import logging
import os

import torch
import torch.distributed as dist

from oumi_megatron.launch import RunSetup
from oumi_megatron.parallel.ranks import local_world_size, rank
from oumi_megatron.step.topology import RolloutTopology
from oumi_megatron.training.policy import MegatronPolicy

logger = logging.getLogger(__name__)


def build_policy(setup: RunSetup, steps: int):
    """The Megatron policy, its optimizer and an LR schedule over ``steps`` GRPO steps."""
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
    if cfg.megatron.parity_gate:
        from oumi_megatron.model.parity_gate import check_parity

        check_parity(loaded.chunks, setup.hf_dir, setup.params_dtype)
    if cfg.megatron.transformer_config.resolved_gradient_accumulation_fusion(
        torch.cuda.is_available()
    ):
        from oumi_megatron.model import fused_wgrad

        count = fused_wgrad.install(loaded.chunks)
        logger.info(
            "gradient_accumulation_fusion: %d linear layer(s) accumulate in the GEMM", count
        )
    if cfg.training.compile:
        from oumi_megatron.model.compile import compile_transformer_layers

        count = compile_transformer_layers(loaded.chunks)
        logger.info("training.compile: %d transformer layer(s) under torch.compile", count)
    from oumi_megatron.step.update import optimizer_steps_per_grpo_step

    per_step = optimizer_steps_per_grpo_step(cfg, setup.validated)
    settings = OptimizerSettings.from_config(cfg, optimizer_steps_per_step=per_step, steps=steps)
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
    """A frozen copy of the initial weights, only when a KL is on (grpo.beta > 0 or
    grpo.kl_in_reward_coef > 0)."""
    if setup.cfg.grpo.beta <= 0 and setup.cfg.grpo.kl_in_reward_coef <= 0:
        return None
    from oumi_megatron.model.bridge import load_megatron_model

    loaded = load_megatron_model(
        str(setup.hf_dir), setup.megatron_checkpoint_dir, setup.layout, setup.params_dtype
    )
    for chunk in loaded.chunks:
        chunk.requires_grad_(False)
    # No top-k/top-p: the KL is between full distributions (see MegatronPolicy).
    return MegatronPolicy(loaded.chunks, setup.cfg.grpo.temperature)


def backend(setup: RunSetup) -> str:
    chosen = setup.cfg.megatron.inference_backend
    if chosen == "auto":
        return "vllm" if torch.cuda.is_available() else "torch"
    return chosen


def uses_rollout_processes(setup: RunSetup) -> bool:
    return setup.cfg.megatron.weight_sync_method in ("gloo", "nccl")


def build_topology(setup: RunSetup) -> RolloutTopology:
    """Rollout replicas over this world (collective: gathers each rank's DP rank and node).

    Rollout processes (weight_sync_method gloo/nccl) are fed by global rank 0: one replica
    spanning the world, whose leader is rank 0.
    """
    from megatron.core import parallel_state

    world = dist.get_world_size() if dist.is_initialized() else 1
    node = int(os.environ.get("GROUP_RANK", rank() // local_world_size()))
    mine = [parallel_state.get_data_parallel_rank(), node]
    everyone = [mine]
    if world > 1:
        everyone = [None] * world
        dist.all_gather_object(everyone, mine)
    sizes = {
        "dp_rank_of": tuple(d for d, _ in everyone),
        "node_of": tuple(n for _, n in everyone),
        "num_prompts": setup.validated.prompts_per_step,
        "num_generations": setup.cfg.grpo.num_generations,
        "global_batch_size": setup.validated.global_batch_size,
    }
    if uses_rollout_processes(setup):
        return RolloutTopology.single(world, **sizes)
    return RolloutTopology(replica_size=setup.cfg.megatron.rollout_tensor_parallel_size, **sizes)


def build_engine(setup: RunSetup, topology: RolloutTopology):
    """This rank's rollout engine, or None: one per replica, on its leader (torch engine,
    rollout processes), or on every rank of the replica (vLLM, tensor-parallel over them)."""
    if not generates(setup, topology):
        return None
    if setup.roles is not None and setup.roles.rollout_workers:
        return _rollout_workers(setup)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    spec = engine_spec(setup, backend(setup), device, topology)
    if uses_rollout_processes(setup):
        return _remote_engines(setup, spec, setup.cfg.megatron.weight_sync_method)
    from oumi_megatron.parallel.startup import seed_everything
    from oumi_megatron.rollout.factory import build_engine as build_rollout_engine

    engine = build_rollout_engine(spec)
    seed_everything(setup.cfg.training.seed)  # vLLM reseeds Python, NumPy and torch
    return engine


def generates(setup: RunSetup, topology: RolloutTopology) -> bool:
    """Whether this rank calls `generate` (every rank of a vLLM replica; the leader otherwise)."""
    if backend(setup) == "vllm" and not uses_rollout_processes(setup):
        return True
    return topology.is_leader(rank())


def engine_spec(
    setup: RunSetup, backend: str, device: str, topology: RolloutTopology | None = None
):
    """How to build the rollout engine: the trainer's dtype (so engine and trainer log-probs
    compare like for like) and, for vLLM, the recipe's memory and compile settings and its
    replica's tensor-parallel size."""
    from oumi_megatron.rollout.factory import EngineSpec, dtype_name

    cfg, m = setup.cfg, setup.cfg.megatron
    colocated = topology is not None and not uses_rollout_processes(setup)
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
        tensor_parallel_size=topology.replica_size if colocated and backend == "vllm" else 1,
        # vLLM joins the trainer's torchrun world (one engine per replica) instead of its own.
        external_launcher=colocated and backend == "vllm",
        vllm_sleep_level=(2 if colocated and m.enable_weight_sync else 1) if m.vllm_sleep else 0,
    )


def _rollout_workers(setup: RunSetup):
    """The rollout nodes' workers (megatron.rollout_nodes), fed by global rank 0."""
    from oumi_megatron.rollout.workers import RolloutWorkers, WorkerAddress

    m = setup.cfg.megatron
    address = WorkerAddress.from_env(setup.roles.rollout_workers, m.rollout_timeout_s)
    nccl = m.weight_sync_method == "nccl"
    device = torch.device("cuda", torch.cuda.current_device()) if nccl else None
    return RolloutWorkers(address, m.weight_sync_method, m.weight_sync_bucket_size_mb << 20, device)


def _remote_engines(setup: RunSetup, spec, method: str):
    """Rollout processes fed over a gloo/NCCL broadcast group (started by global rank 0)."""
    from dataclasses import replace

    from oumi_megatron.rollout.remote import RemoteRolloutEngines

    m, devices = setup.cfg.megatron, setup.rollout_devices  # resolved and checked at start-up
    specs = [replace(spec, device=device) for device in devices]
    trainer_gpus = {f"cuda:{i}" for i in range(local_world_size())} | {"cuda"}
    engine = RemoteRolloutEngines(specs, method, m.weight_sync_bucket_size_mb << 20,
                                  timeout_s=m.rollout_timeout_s,
                                  colocated=bool(trainer_gpus & set(devices)))  # fmt: skip
    return engine


def build_prompts(setup: RunSetup, prompts_per_step: int):
    """The tokenizer and the prompt loader (the prompts read while validating, if they were)."""
    from oumi_megatron.data.loader import PromptDataLoader
    from oumi_megatron.data.prompts import load_prompt_datasets
    from oumi_megatron.launch import load_tokenizer

    cfg = setup.cfg
    if setup.prompts is not None:
        tokenizer, dataset = setup.prompts
    else:
        tokenizer = load_tokenizer(cfg, setup.hf_dir)
        dataset = load_prompt_datasets(
            cfg.data.train.datasets, tokenizer, cfg.grpo.max_prompt_length
        )
    loader = PromptDataLoader(dataset, prompts_per_step, seed=cfg.sampling_seed)
    return tokenizer, loader


def build_rewards(setup: RunSetup):
    from oumi_megatron.rewards import resolve_reward_functions

    grpo = setup.cfg.grpo
    return resolve_reward_functions(grpo.reward_functions, grpo.reward_function_kwargs)


def build_evaluator(setup: RunSetup, tokenizer, reward_functions):
    """The evaluator of ``data.validation`` (None without validation data)."""
    from oumi_megatron.data.prompts import load_prompt_datasets
    from oumi_megatron.step.evaluate import Evaluator

    cfg = setup.cfg
    if not cfg.data.validation.datasets:
        return None
    prompts = load_prompt_datasets(
        cfg.data.validation.datasets, tokenizer, cfg.grpo.max_prompt_length
    )
    names = [f.name for f in reward_functions]
    return Evaluator(
        prompts=[prompts[i] for i in range(len(prompts))],
        tokenizer=tokenizer,
        reward_functions=reward_functions,
        weights=cfg.grpo.reward_weights,
        accuracy_name=cfg.grpo.accuracy_reward or names[0],
        max_new_tokens=cfg.grpo.max_completion_length,
        every=int(cfg.training.eval_steps),
    )

"""The CLI's commands: each prepares (validates) first, then starts processes and models."""

from __future__ import annotations

import logging
import os

import torch
import torch.distributed as dist

from oumi_megatron.launch import RunSetup, prepare_run
from oumi_megatron.parallel.ranks import all_reduce_host, is_rank0

logger = logging.getLogger("oumi_megatron")


def _start(setup: RunSetup) -> None:
    from oumi_megatron.parallel.startup import init_distributed, init_model_parallel

    init_distributed()
    init_model_parallel(setup.layout, seed=setup.cfg.training.seed)


def _load(setup: RunSetup):
    from oumi_megatron.model.bridge import load_megatron_model

    _start(setup)
    return load_megatron_model(
        str(setup.hf_dir),
        setup.megatron_checkpoint_dir,
        setup.layout,
        params_dtype=setup.params_dtype,
        trust_remote_code=setup.cfg.model.trust_remote_code,
    )


def _rank0(message: str, *args) -> None:
    if is_rank0():
        logger.info(message, *args)


def train(args) -> int:
    from oumi_megatron.config import MEGATRON_GRPO, ConfigError

    setup = prepare_run(args.config, args.overrides, for_training=True)
    if setup.cfg.training.trainer_type != MEGATRON_GRPO:
        raise ConfigError(
            f"training.trainer_type ({setup.cfg.training.trainer_type.name}) is not trained by "
            "this release; use MEGATRON_GRPO (MEGATRON_SFT is planned)"
        )
    if setup.roles.is_rollout_worker:
        return _rollout_worker(setup)
    # The trainer's world is the training nodes only; the rollout nodes meet rank 0 apart.
    os.environ["WORLD_SIZE"] = str(setup.roles.trainer_world_size)
    _start(setup)
    from oumi_megatron.trainer import OumiMegatronGrpoTrainer

    trainer = OumiMegatronGrpoTrainer(setup)
    trainer.train(resume_from_checkpoint=args.resume)
    return 0


def _rollout_worker(setup: RunSetup) -> int:
    """This process is on a rollout node: serve one engine until the trainer closes it."""
    from oumi_megatron.rollout.remote import leave_launcher_world
    from oumi_megatron.rollout.workers import WorkerAddress, serve_rollout_worker
    from oumi_megatron.step.components import backend, engine_spec

    m, roles = setup.cfg.megatron, setup.roles
    address = WorkerAddress.from_env(roles.rollout_workers, m.rollout_timeout_s)
    device = "cpu"
    if torch.cuda.is_available():
        # Its own GPU alone (vLLM puts its worker on cuda:0 of what it sees).
        local = int(os.environ.get("LOCAL_RANK", "0"))
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        os.environ["CUDA_VISIBLE_DEVICES"] = visible.split(",")[local] if visible else str(local)
        device = "cuda:0"
    leave_launcher_world()  # an engine (vLLM) may start a world of its own
    spec = engine_spec(setup, backend(setup), device)
    serve_rollout_worker(spec, m.weight_sync_method, address, roles.worker_index)
    return 0


def convert(args) -> int:
    setup = prepare_run(args.config, args.overrides, for_training=False)
    loaded = _load(setup)
    action = "reused" if loaded.reused_checkpoint else "converted"
    _rank0(
        "%s %s in %.2f s (weights %.2f s)",
        action,
        setup.megatron_checkpoint_dir,
        loaded.seconds,
        loaded.weights_seconds,
    )
    return 0


def export(args) -> int:
    from oumi_megatron.model.bridge import export_hf_model

    setup = prepare_run(args.config, args.overrides, for_training=False)
    loaded = _load(setup)
    path = export_hf_model(loaded, setup.hf_export_dir)
    _rank0("exported %s", path)
    return 0


def verify(args) -> int:
    """Compare logits with Hugging Face on the last pipeline stage; non-zero exit on mismatch."""
    from oumi_megatron.model.bridge import export_hf_model
    from oumi_megatron.model.forward import forward_logits

    setup = prepare_run(args.config, args.overrides, for_training=False)
    loaded = _load(setup)
    vocab = loaded.provider.vocab_size
    generator = torch.Generator().manual_seed(setup.cfg.training.seed)
    input_ids = torch.randint(0, vocab, (4, 32), generator=generator)
    logits = forward_logits(
        loaded.chunks, input_ids, micro_batch_size=setup.cfg.megatron.micro_batch_size
    )
    worst = torch.zeros(1, dtype=torch.float64)
    if logits is not None:
        reference = _hf_logits(setup, input_ids)
        worst[0] = (logits[..., :vocab] - reference[..., :vocab]).abs().max().item()
    all_reduce_host(worst, op=dist.ReduceOp.MAX)
    ok = worst.item() <= args.tolerance
    _rank0(
        "HF vs Megatron logits at %s on %d ranks: max |Δ| = %.3g (%s, tolerance %.0e)",
        setup.layout,
        setup.world_size,
        worst.item(),
        "OK" if ok else "MISMATCH",
        args.tolerance,
    )
    if args.export:
        _rank0("exported %s", export_hf_model(loaded, setup.hf_export_dir))
    return 0 if ok else 1


def _hf_logits(setup: RunSetup, input_ids: torch.Tensor) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        setup.hf_dir, dtype=setup.params_dtype, trust_remote_code=setup.cfg.model.trust_remote_code
    ).eval()
    with torch.no_grad():
        return model(input_ids).logits.float()

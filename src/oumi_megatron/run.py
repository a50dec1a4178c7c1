"""``run_training``: one process's part of a Megatron training job, from a loaded config.

The one path behind ``oumi-megatron train``, ``oumi train`` and ``oumi.train(config)``: validate
for this world, then serve rollout (a process of ``megatron.rollout_nodes``) or train.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch


def as_megatron_config(config):
    """``config`` as a ``MegatronTrainingConfig``: an Oumi ``TrainingConfig`` gets default
    ``megatron:``/``grpo:`` sections; ours is returned as is."""
    import dataclasses

    from oumi.core.configs import TrainingConfig

    from oumi_megatron.config import MegatronTrainingConfig

    if isinstance(config, MegatronTrainingConfig):
        return config
    if not isinstance(config, TrainingConfig):
        raise TypeError(
            f"expected an Oumi TrainingConfig or MegatronTrainingConfig, got {type(config)}"
        )
    sections = {f.name: getattr(config, f.name) for f in dataclasses.fields(TrainingConfig)}
    return MegatronTrainingConfig(**sections)


def check_trainer_type(cfg) -> None:
    """Raises ``ConfigError`` unless ``cfg`` names a trainer this release runs."""
    from oumi_megatron.config import MEGATRON_GRPO, ConfigError

    if cfg.training.trainer_type != MEGATRON_GRPO:
        raise ConfigError(
            f"training.trainer_type ({cfg.training.trainer_type.name}) is not trained by "
            "this release; use MEGATRON_GRPO (MEGATRON_SFT is planned)"
        )


def check_run_start(setup, resume: str | None) -> None:
    """A named checkpoint to resume from must exist (``latest`` may find none: fresh start),
    and a fresh run must not start in another run's directory (`run_dir`)."""
    from oumi_megatron.config import ConfigError
    from oumi_megatron.run_dir import check_fresh_run, check_writable
    from oumi_megatron.training import checkpoint

    resume = checkpoint.requested_resume(resume, setup.cfg.training)
    try:
        path = checkpoint.resolve_resume_path(setup.output_dir / "checkpoints", resume)
    except FileNotFoundError as error:
        raise ConfigError(f"{error}. Fix: pass one of them, 'latest', or no --resume.") from None
    mismatch = path and checkpoint.layout_mismatch(path, checkpoint.layout_record(setup))
    if mismatch:
        raise ConfigError(mismatch)
    # `latest` without a checkpoint starts fresh: the same rule as no resume at all.
    overwrite = setup.cfg.megatron.overwrite_output_dir
    weights = sum(f.stat().st_size for f in Path(setup.hf_dir).glob("*.safetensors"))
    problems = [
        check_fresh_run(setup.output_dir, path is not None, overwrite),
        check_writable(setup.output_dir, 2 * weights),
    ]
    if any(problems):
        raise ConfigError.of([p for p in problems if p])


def prepare_training(config, resume_from_checkpoint: str | None = None):
    """``config`` validated for training in this torchrun world (a ``RunSetup``): trainer type,
    every config check, the checkpoint to resume from; applies ``training.log_level``.

    Raises:
        ConfigError: for bad input, before any model is built or file written.
    """
    from oumi_megatron.console import apply_log_level
    from oumi_megatron.launch import prepare_setup

    cfg = as_megatron_config(config)
    check_trainer_type(cfg)
    # One message for every problem: the config's and the run directory's together.
    run_start = functools.partial(check_run_start, resume=resume_from_checkpoint)
    setup = prepare_setup(cfg, for_training=True, run_start=run_start)
    apply_log_level(cfg.training.log_level)
    return setup


def run_training(config, resume_from_checkpoint: str | None = None) -> None:
    """Trains ``config`` (a ``MegatronTrainingConfig`` or Oumi ``TrainingConfig``) in this process.

    Raises:
        ConfigError: for bad input, before any model is built or file written.
    """
    setup = prepare_training(config, resume_from_checkpoint)
    if setup.roles.is_rollout_worker:
        serve_rollout(setup)
        return
    from oumi_megatron.trainer import MegatronGrpoTrainer

    trainer = MegatronGrpoTrainer(setup.cfg, setup=setup)
    trainer.train(resume_from_checkpoint=resume_from_checkpoint)


def serve_rollout(setup) -> None:
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

"""From a config path to a validated run on this rank: config, layout, dtype, output paths.

Everything here runs before any process group, model or file exists, so bad input fails fast.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from oumi_megatron.parallel.layout import ParallelLayout
from oumi_megatron.parallel.ranks import local_world_size
from oumi_megatron.rollout.factory import DTYPES


@dataclass(frozen=True)
class JobRoles:
    """Which processes of the launched job train and which generate (``rollout_nodes``).

    torchrun numbers ranks node after node, so the trainer is ranks ``0 .. trainer_world_size
    - 1`` (the first nodes) and the rollout workers are the rest (the last nodes).
    """

    world_size: int  # every process of the job
    trainer_world_size: int
    rank: int

    @property
    def rollout_workers(self) -> int:
        return self.world_size - self.trainer_world_size

    @property
    def is_rollout_worker(self) -> bool:
        return self.rank >= self.trainer_world_size

    @property
    def worker_index(self) -> int:
        return self.rank - self.trainer_world_size


def job_roles(rollout_nodes: int) -> JobRoles:
    """The roles of this job's processes from torchrun's variables; raises ``ConfigError``
    when the rollout nodes would leave nothing to train on."""
    from oumi_megatron.config import ConfigError

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if not rollout_nodes:
        return JobRoles(world, world, rank)
    nodes = int(os.environ.get("GROUP_WORLD_SIZE", "1"))
    if rollout_nodes >= nodes or world % nodes:
        raise ConfigError(
            f"megatron.rollout_nodes ({rollout_nodes}) must leave at least one of the job's "
            f"{nodes} node(s) to train (with the same number of processes on every node; "
            f"world size {world}). Fix: launch more nodes (torchrun --nnodes), or lower "
            f"megatron.rollout_nodes."
        )
    return JobRoles(world, world // nodes * (nodes - rollout_nodes), rank)


@dataclass
class RunSetup:
    cfg: object  # MegatronTrainingConfig
    hf_dir: Path
    layout: ParallelLayout
    world_size: int
    params_dtype: torch.dtype
    validated: object  # ValidatedLayout: DP size, micro-batches per step, prompts per step
    rollout_devices: list[str] | None = None  # rollout processes (weight_sync_method gloo/nccl)
    roles: JobRoles | None = None  # trainer and rollout-worker processes of the job
    prompts: tuple | None = None  # (tokenizer, PromptDataset) read while validating

    @property
    def output_dir(self) -> Path:
        return Path(self.cfg.training.output_dir)

    @property
    def megatron_checkpoint_dir(self) -> Path:
        return Path(self.cfg.megatron_checkpoint_dir)

    @property
    def hf_export_dir(self) -> Path:
        return self.output_dir / "hf_model"


def prepare_run(config_path: str, overrides: list[str], for_training: bool) -> RunSetup:
    """Load and validate the config for this torchrun world; raises `ConfigError` on bad input."""
    from oumi_megatron.config import load_config

    return prepare_setup(load_config(config_path, overrides, check=False), for_training)


def prepare_setup(cfg, for_training: bool, run_start=None) -> RunSetup:
    """Validate a loaded ``MegatronTrainingConfig`` for this torchrun world (no process group,
    model or file is created); raises one `ConfigError` listing every problem found, those of
    ``run_start(setup)`` (the output directory, the checkpoint to resume) included."""
    from oumi_megatron.config import validate_config
    from oumi_megatron.config.errors import Problems

    problems = Problems()
    roles = problems.check(job_roles, cfg.megatron.rollout_nodes)
    world_size = roles.trainer_world_size if roles else int(os.environ.get("WORLD_SIZE", "1"))
    hf_dir, shape = problems.check(_model_shape, cfg) or (None, None)
    prompts = None
    if for_training and hf_dir is not None and not (roles and roles.is_rollout_worker):
        prompts = problems.check(_read_prompts, cfg, hf_dir)  # rows, fields, lengths: up front
    validated = problems.check(
        validate_config, cfg, world_size, shape, run_oumi_finalize=for_training, problems=problems
    )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dtype = DTYPES[cfg.megatron.transformer_config.resolved_params_dtype(device)]
        layout = ParallelLayout.from_params(cfg.megatron)
    except Exception:
        problems.raise_if_any()  # a section too broken to read: its own errors say why
        raise
    rollout_devices = None
    if (
        for_training
        and cfg.megatron.weight_sync_method in ("gloo", "nccl")
        and roles is not None
        and not roles.rollout_workers
    ):
        m = cfg.megatron
        rollout_devices = problems.check(
            resolve_rollout_devices, m.weight_sync_method, m.rollout_workers, m.rollout_devices,
            local_world_size(), torch.cuda.device_count(),
        )  # fmt: skip
    setup = RunSetup(
        cfg, hf_dir, layout, world_size, dtype, validated, rollout_devices, roles, prompts
    )
    if run_start is not None and hf_dir is not None:
        problems.check(run_start, setup)
    problems.raise_if_any()
    return setup


def _model_shape(cfg):
    """The model's local directory and shape; ``ConfigError`` when it cannot be read."""
    from oumi_megatron.config import ConfigError, ModelShape
    from oumi_megatron.config.validation import check_model_path
    from oumi_megatron.model.bridge import resolve_hf_dir

    check_model_path(cfg)
    name = cfg.model.model_name
    try:
        hf_dir = resolve_hf_dir(name, cfg.model.trust_remote_code)
    except (OSError, ValueError) as error:  # not cached and offline, unknown repo, no network
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(
            f"model.model_name ({name!r}) is neither a local directory nor in the Hugging "
            f"Face cache, and could not be downloaded ({first}). Fix: download it first "
            f"('hf download {name}') or point model.model_name at a local checkpoint."
        ) from None
    return hf_dir, ModelShape.from_model_dir(hf_dir)


def _read_prompts(cfg, hf_dir: Path):
    """The tokenizer and the training prompts, read and checked before any work (a missing,
    malformed or empty file, a row without the prompt field); ``ConfigError`` otherwise."""
    from oumi_megatron.config import ConfigError
    from oumi_megatron.config.data_checks import check_data
    from oumi_megatron.data.prompts import load_prompt_datasets
    from oumi_megatron.data.sources import PromptDataError

    check_data(cfg)  # paths first: their messages name the field
    try:
        tokenizer = load_tokenizer(cfg, hf_dir)
    except (OSError, ValueError) as error:
        raise ConfigError(
            f"model.tokenizer_name / model.model_name: cannot load the tokenizer from "
            f"{cfg.model.tokenizer_name or hf_dir} ({str(error).strip().splitlines()[0]}). Fix: "
            f"point it at a directory with the tokenizer files."
        ) from None
    try:
        data = load_prompt_datasets(cfg.data.train.datasets, tokenizer, cfg.grpo.max_prompt_length)
    except PromptDataError as error:
        raise ConfigError(f"data.train.datasets: {error}") from None
    return tokenizer, data


def load_tokenizer(cfg, hf_dir: Path):
    """The run's tokenizer with ``model.chat_template`` applied."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(
        cfg.model.tokenizer_name or str(hf_dir), trust_remote_code=cfg.model.trust_remote_code
    )
    if cfg.model.chat_template:
        from oumi.builders.models import build_chat_template

        tokenizer.chat_template = build_chat_template(cfg.model.chat_template)
    return tokenizer


def start_processes(setup: RunSetup) -> None:
    """The trainer's process group (its world is the training nodes only; rollout nodes meet
    rank 0 apart) and Megatron's parallel groups."""
    from oumi_megatron.parallel.startup import init_distributed, init_model_parallel

    if setup.roles is not None:
        os.environ["WORLD_SIZE"] = str(setup.roles.trainer_world_size)
    init_distributed()
    init_model_parallel(setup.layout, seed=setup.cfg.training.seed)


def resolve_rollout_devices(
    method: str,
    workers: int,
    devices: list[str] | None,
    local_world_size: int,
    cuda_count: int,
) -> list[str]:
    """Devices of the rollout processes for weight_sync_method `method` ("gloo" | "nccl").

    Raises ``ConfigError`` (before any work) when nccl has no spare GPU: NCCL cannot connect
    two processes on one GPU, so rollout GPUs must come after the trainer's local ones.
    """
    from oumi_megatron.config import ConfigError

    if devices is not None:
        resolved = list(devices)
    elif method == "nccl":
        resolved = [f"cuda:{local_world_size + i}" for i in range(workers)]
    else:
        resolved = ["cpu"] * workers
    wanted = [int(d.split(":")[1]) for d in resolved if d.startswith("cuda:")]
    if method == "nccl" and any(i < local_world_size for i in wanted):
        raise ConfigError(
            f"megatron.rollout_devices ({resolved}) overlap the trainer's GPUs on this node "
            f"(cuda:0..{local_world_size - 1}); NCCL cannot connect two processes on one GPU. "
            f"Fix: rollout GPUs from cuda:{local_world_size} on, or weight_sync_method: gloo."
        )
    if method == "nccl" and (cuda_count == 0 or any(i >= cuda_count for i in wanted)):
        raise ConfigError(
            f"megatron.weight_sync_method 'nccl' with {workers} rollout process(es) needs GPUs "
            f"{resolved}, but this node has {cuda_count} and the trainer uses the first "
            f"{local_world_size}. Fix: start fewer trainer processes per node, set "
            f"megatron.rollout_devices, or use weight_sync_method: gloo / inprocess."
        )
    return resolved

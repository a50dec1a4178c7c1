"""Start the process group from torchrun's environment and build Megatron's parallel groups."""

from __future__ import annotations

import datetime
import logging
import os

import torch
import torch.distributed as dist

from oumi_megatron.parallel.cpu_compat import apply_cpu_compat
from oumi_megatron.parallel.layout import ParallelLayout
from oumi_megatron.processes import free_port

logger = logging.getLogger(__name__)


def default_backend() -> str:
    return "nccl" if torch.cuda.is_available() else "gloo"


def init_distributed(backend: str | None = None, timeout_minutes: int = 30) -> None:
    """`init_process_group` from torchrun's variables; a 1-process group when run without torchrun."""
    if dist.is_initialized():
        return
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(free_port()))
    backend = backend or default_backend()
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_minutes))
    logger.info("process group %s: rank %d of %d", backend, dist.get_rank(), dist.get_world_size())


def init_model_parallel(layout: ParallelLayout, seed: int = 1234) -> None:
    """(Re)build Megatron's TP/PP/CP/EP/DP groups for `layout` and seed its RNG streams."""
    from megatron.core import parallel_state

    apply_cpu_compat()
    layout.data_parallel_size(dist.get_world_size())  # fails with a named error before Megatron
    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    parallel_state.initialize_model_parallel(
        tensor_model_parallel_size=layout.tp,
        pipeline_model_parallel_size=layout.pp,
        virtual_pipeline_model_parallel_size=layout.vpp,
        context_parallel_size=layout.cp,
        expert_model_parallel_size=layout.ep,
        expert_tensor_parallel_size=layout.etp,
    )
    seed_everything(seed)


def seed_everything(seed: int) -> None:
    """Python, NumPy, torch (CPU and CUDA) and Megatron's model-parallel RNG streams, as
    Megatron-LM's `_set_random_seed` does (the same seed on every rank: weights come from the
    converted checkpoint, not from initialisation)."""
    import random

    import numpy as np
    from megatron.core.tensor_parallel.random import model_parallel_cuda_manual_seed

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    model_parallel_cuda_manual_seed(seed)

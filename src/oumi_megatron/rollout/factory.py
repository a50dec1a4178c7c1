"""Build a rollout engine from plain settings (picklable, so a rollout process can build one)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from oumi_megatron.rollout.base import RolloutEngine

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class EngineSpec:
    """What a rollout engine is built from.

    ``backend``: "torch" (Hugging Face transformers) or "vllm"; ``device``: where it runs
    ("cpu", "cuda", "cuda:1"); ``dtype``: "fp32" | "bf16" | "fp16".
    """

    backend: str
    model_dir: str
    device: str = "cpu"
    dtype: str = "fp32"
    seed: int = 0
    trust_remote_code: bool = False
    # vLLM only: memory fraction, eager mode (no compile / CUDA graphs), longest sequence.
    vllm_gpu_memory_utilization: float = 0.5
    vllm_enforce_eager: bool = False
    max_model_len: int | None = None
    # vLLM only: tensor-parallel size of the engine, and whether it runs inside the trainer's
    # torchrun processes (vLLM's "external_launcher": one engine per group of ranks).
    tensor_parallel_size: int = 1
    external_launcher: bool = False
    # vLLM only: 2 drops the weights while asleep (every sleep is followed by a full weight
    # sync), 1 keeps a host copy, 0 never sleeps.
    vllm_sleep_level: int = 1

    def __post_init__(self) -> None:
        if self.backend not in ("torch", "vllm"):
            raise ValueError(f"backend must be 'torch' or 'vllm', got {self.backend!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")


def dtype_name(dtype: torch.dtype) -> str:
    """The spec's name of a torch dtype (torch.bfloat16 -> "bf16")."""
    return {v: k for k, v in DTYPES.items()}[dtype]


def build_engine(spec: EngineSpec) -> RolloutEngine:
    """The engine `spec` describes, on `spec.device`."""
    if spec.backend == "vllm":
        from oumi_megatron.rollout.vllm_engine import VllmRolloutEngine

        if spec.device.startswith("cuda:"):
            torch.cuda.set_device(torch.device(spec.device))
        return VllmRolloutEngine(
            spec.model_dir,
            dtype={"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}[spec.dtype],
            seed=spec.seed,
            gpu_memory_utilization=spec.vllm_gpu_memory_utilization,
            enforce_eager=spec.vllm_enforce_eager,
            max_model_len=spec.max_model_len,
            trust_remote_code=spec.trust_remote_code,
            tensor_parallel_size=spec.tensor_parallel_size,
            external_launcher=spec.external_launcher,
            sleep_level=spec.vllm_sleep_level,
        )
    from oumi_megatron.rollout.torch_engine import TorchRolloutEngine

    return TorchRolloutEngine(
        Path(spec.model_dir),
        device=spec.device,
        dtype=DTYPES[spec.dtype],
        trust_remote_code=spec.trust_remote_code,
    )

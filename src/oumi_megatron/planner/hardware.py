"""The cluster a plan is for: GPU memory, peak FLOP/s and link bandwidths.

Bandwidths are per GPU and per direction, as achieved by NCCL collectives (bus bandwidth)
rather than the datasheet line rate: NVLink 4 (H100/H200 SXM) ~360 GB/s intra-node, one
400 Gb/s InfiniBand NIC per GPU ~45 GB/s across nodes, PCIe 5 ~25 GB/s to the host.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

GiB = 1024**3


@dataclass(frozen=True)
class Hardware:
    name: str
    memory_bytes: int
    peak_flops: float
    """Dense bf16 FLOP/s per GPU."""
    intra_node_bw: float
    """Bytes/s per GPU inside a node (NVLink)."""
    inter_node_bw: float
    """Bytes/s per GPU between nodes (InfiniBand/RoCE)."""
    host_bw: float = 25e9
    """Bytes/s between a GPU and host memory (PCIe), for CPU offload."""
    gpus_per_node: int = 8

    @property
    def memory_gib(self) -> float:
        return self.memory_bytes / GiB


PRESETS = {
    "h100": Hardware("H100 80GB", 80 * GiB, 989e12, 360e9, 45e9),
    "h200": Hardware("H200 141GB", 141 * 10**9, 989e12, 360e9, 45e9),
    "a100": Hardware("A100 80GB", 80 * GiB, 312e12, 240e9, 22e9),
    "b200": Hardware("B200 180GB", 180 * 10**9, 2250e12, 720e9, 45e9),
}


def parse_memory(text: str) -> int:
    """``80GiB``, ``141GB``, ``80`` (GiB) → bytes."""
    match = re.fullmatch(r"\s*([0-9.]+)\s*(GiB|GB|G)?\s*", text, flags=re.IGNORECASE)
    if not match:
        raise ValueError(f"--gpu-memory '{text}': expected a size such as 80GiB or 141GB")
    value, unit = float(match.group(1)), (match.group(2) or "GiB").lower()
    return int(value * (10**9 if unit == "gb" else GiB))


def hardware(gpu: str, memory: str | None, gpus_per_node: int) -> Hardware:
    """A preset (``h100``, ``h200``, ``a100``, ``b200``) with optional overrides."""
    key = gpu.lower()
    if key not in PRESETS:
        raise ValueError(f"--gpu '{gpu}': expected one of {', '.join(PRESETS)}")
    chosen = replace(PRESETS[key], gpus_per_node=gpus_per_node)
    if memory is not None:
        chosen = replace(chosen, memory_bytes=parse_memory(memory))
    return chosen

"""Process groups and model-parallel topology (TP/PP/VPP/CP/EP/DP), CPU/gloo compatibility."""

from oumi_megatron.parallel.layout import ParallelLayout

__all__ = ["ParallelLayout"]

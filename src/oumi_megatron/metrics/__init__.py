"""Training telemetry: one metrics logger, phase timers, MFU accounting, one progress reporter.

Pure Python/torch (no Megatron import); TensorBoard and wandb load only when enabled.
"""

from oumi_megatron.metrics.mfu import (
    PEAK_FLOPS_ENV,
    effective_seq_len,
    estimate_flops_per_token,
    mfu,
    peak_flops_for_device,
    peak_flops_for_name,
    throughput_metrics,
    tokens_per_second,
)
from oumi_megatron.metrics.progress import TrainingProgress, interactive_console
from oumi_megatron.metrics.sinks import MetricsLogger, wandb_mode_from_env
from oumi_megatron.metrics.timers import STANDARD_PHASES, PhaseTimer

__all__ = [
    "PEAK_FLOPS_ENV",
    "STANDARD_PHASES",
    "MetricsLogger",
    "PhaseTimer",
    "TrainingProgress",
    "effective_seq_len",
    "estimate_flops_per_token",
    "interactive_console",
    "mfu",
    "peak_flops_for_device",
    "peak_flops_for_name",
    "throughput_metrics",
    "tokens_per_second",
    "wandb_mode_from_env",
]

"""Parallel-layout planner: valid TP/PP/VPP/CP/EP/DP layouts for a model on N GPUs, ranked
by estimated step time, with per-GPU memory estimates (``oumi-megatron plan``)."""

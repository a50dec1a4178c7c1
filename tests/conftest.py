"""Test-wide settings: offline hubs, no telemetry, GPU tests skipped without CUDA, CPU-only
patch tests skipped with it."""

from __future__ import annotations

import os

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")

import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        # CPU-only patches are never applied on a GPU machine: neither are their tests.
        skip_cpu = pytest.mark.skip(reason="tests a CPU-only patch: not applied where CUDA is")
        for item in items:
            if "cpu_only" in item.keywords:
                item.add_marker(skip_cpu)
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU: run on the device machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)

"""Fixtures for multi-process tests: tiny offline models."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> Path:
    """Tiny random checkpoints of every supported family (testing.tiny_models), offline
    tokenizer included."""
    from oumi_megatron.testing.tiny_models import ARCHITECTURES, build_tiny_model

    root = tmp_path_factory.mktemp("tiny_models")
    for arch in ARCHITECTURES:
        build_tiny_model(arch, root / arch)
    return root

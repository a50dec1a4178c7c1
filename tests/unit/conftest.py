"""Shared fixtures. Environment first: Oumi and HF read these at import time."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

CONFIG_DATA = Path(__file__).resolve().parents[1] / "data" / "configs"


@pytest.fixture(scope="session")
def grpo_yaml() -> str:
    """Text of the smallest valid MEGATRON_GRPO recipe (TP 2, micro 2, global 32, 4 gens)."""
    return (CONFIG_DATA / "grpo_minimal.yaml").read_text()


@pytest.fixture
def load(grpo_yaml: str) -> Callable[..., object]:
    """``load(*overrides, text=grpo_yaml)`` -> MegatronTrainingConfig."""
    from oumi_megatron.config import load_config_from_str

    def _load(*overrides: str, text: str | None = None):
        return load_config_from_str(grpo_yaml if text is None else text, list(overrides))

    return _load


@pytest.fixture
def tiny_model_dir(tmp_path: Path) -> Path:
    """A local HF-style model directory with only a Llama config.json (24 layers, 16/4 heads)."""
    model_dir = tmp_path / "tiny_llama"
    model_dir.mkdir()
    config = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "num_key_value_heads": 4,
        "hidden_size": 256,
        "intermediate_size": 512,
        "vocab_size": 32000,
    }
    (model_dir / "config.json").write_text(json.dumps(config))
    return model_dir

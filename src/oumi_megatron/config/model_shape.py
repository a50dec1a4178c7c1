"""``ModelShape``: the few architecture numbers the parallel layout is checked against."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oumi_megatron.config.errors import ConfigError

if TYPE_CHECKING:
    from transformers import PretrainedConfig

# Expert-count attribute names used by HF MoE configs (Mixtral, Qwen-MoE, DeepSeek, ...).
_EXPERT_ATTRS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")
_BIASED_EXPERTS = ("gpt_oss",)  # model types whose experts' projections have biases


@dataclass(frozen=True)
class ModelShape:
    """Architecture numbers that constrain TP/PP/EP."""

    num_layers: int
    num_attention_heads: int
    num_kv_heads: int
    num_experts: int | None
    """None (or absent) for dense models."""
    vocab_size: int
    max_positions: int | None = None
    """``max_position_embeddings``: the longest sequence the model is configured for."""
    expert_biases: bool = False
    """Its experts' projections have biases (GPT-OSS): Megatron needs expert TP 1."""

    @classmethod
    def from_hf_config(cls, config: PretrainedConfig) -> ModelShape:
        """Reads the shape from a transformers config (the text part, for multimodal ones)."""
        text: Any = config.get_text_config() if hasattr(config, "get_text_config") else config
        try:
            heads = int(text.num_attention_heads)
            shape = cls(
                num_layers=int(text.num_hidden_layers),
                num_attention_heads=heads,
                num_kv_heads=int(getattr(text, "num_key_value_heads", None) or heads),
                num_experts=_num_experts(text),
                vocab_size=int(text.vocab_size),
                max_positions=getattr(text, "max_position_embeddings", None),
                expert_biases=getattr(text, "model_type", None) in _BIASED_EXPERTS,
            )
        except AttributeError as e:
            raise ConfigError(
                f"Cannot read the model shape from {type(config).__name__}: {e}. Fix: use a "
                f"decoder-only transformers model config."
            ) from e
        return shape

    @classmethod
    def from_model_dir(cls, model_dir: str | Path) -> ModelShape:
        """Reads ``config.json`` of a local HF model directory (no remote code, no network)."""
        path = Path(model_dir).expanduser()
        if not (path / "config.json").is_file():
            raise ConfigError(
                f"No config.json in '{model_dir}'. Fix: point model.model_name at a Hugging "
                f"Face model directory."
            )
        _check_supported(path)
        from transformers import AutoConfig  # Deferred: heavy, and only needed here.

        try:
            config = AutoConfig.from_pretrained(
                str(path), trust_remote_code=False, local_files_only=True
            )
        except (OSError, ValueError, KeyError) as error:  # unreadable JSON, unknown model_type
            first = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
            raise ConfigError(
                f"model.model_name: cannot read {path / 'config.json'} ({first}). Fix: restore "
                f"the model's config.json (valid JSON with its model_type)."
            ) from None
        return cls.from_hf_config(config)


def _check_supported(path: Path) -> None:
    """A declared family (``model.support``), checked on the raw config.json before any
    heavy import; unreadable JSON is left to the transformers read, which says why."""
    import json

    from oumi_megatron.model.support import UnsupportedArchitecture, check_model_dir

    try:
        check_model_dir(path)
    except json.JSONDecodeError:
        return
    except UnsupportedArchitecture as error:
        raise ConfigError(str(error)) from None


def _num_experts(config: Any) -> int | None:
    for attr in _EXPERT_ATTRS:
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None

"""A model's architecture numbers, read from its Hugging Face ``config.json``, and its
parameter counts per tensor/expert-parallel shard.

Shipped configs (``architectures/<name>/config.json``, no weights) cover the recipes' models;
any local model directory or ``config.json`` works too. Reading is plain JSON: planning a
layout imports neither transformers nor Megatron.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SHIPPED_DIR = Path(__file__).with_name("architectures")

#: Hub ids of the shipped architectures (base and instruct models share one config shape).
HUB_IDS = {
    "meta-llama/Llama-3.1-8B": "llama3.1-8b",
    "meta-llama/Llama-3.1-8B-Instruct": "llama3.1-8b",
    "meta-llama/Llama-3.1-70B": "llama3.1-70b",
    "meta-llama/Llama-3.1-70B-Instruct": "llama3.1-70b",
    "meta-llama/Llama-3.1-405B": "llama3.1-405b",
    "meta-llama/Llama-3.1-405B-Instruct": "llama3.1-405b",
    "Qwen/Qwen2.5-1.5B": "qwen2.5-1.5b",
    "Qwen/Qwen2.5-1.5B-Instruct": "qwen2.5-1.5b",
    "Qwen/Qwen3-30B-A3B": "qwen3-30b-a3b",
    "Qwen/Qwen3-30B-A3B-Base": "qwen3-30b-a3b",
}

_EXPERT_KEYS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")


class ArchitectureError(ValueError):
    """The model's config cannot be found or read."""


def shipped_names() -> list[str]:
    return sorted(p.name for p in SHIPPED_DIR.iterdir() if (p / "config.json").is_file())


def shipped_config_dir(name_or_hub_id: str) -> Path | None:
    """The shipped architecture directory for a shipped name or a known Hub id, else None."""
    name = HUB_IDS.get(name_or_hub_id, name_or_hub_id)
    path = SHIPPED_DIR / name
    return path if (path / "config.json").is_file() else None


@dataclass(frozen=True)
class Architecture:
    """The numbers memory and step time depend on (the same names as ``ModelShape``)."""

    name: str
    num_layers: int
    hidden_size: int
    ffn_hidden_size: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    tied_embeddings: bool
    qkv_bias: bool
    num_experts: int | None = None
    moe_top_k: int = 0
    moe_ffn_hidden_size: int = 0
    shared_expert_ffn_hidden_size: int = 0
    moe_layers: int = 0
    max_positions: int | None = None
    # Multi-latent attention (DeepSeek-V3): queries and keys/values through low-rank latents;
    # ``head_dim`` is then the query/key width per head (no-RoPE + RoPE parts).
    q_lora_rank: int = 0
    kv_lora_rank: int = 0
    qk_rope_head_dim: int = 0
    v_head_dim: int = 0
    layer_extra_params: int = 0
    """Small per-layer tensors besides the projections and the two norms: Q/K norms, Gemma's
    extra norms, output-projection, router and expert biases, attention sinks."""

    @property
    def attention_params(self) -> int:
        """Q, K, V and output projections of one layer (+ Q/K/V biases)."""
        if self.kv_lora_rank:
            return self._mla_params
        q, kv = self.num_attention_heads * self.head_dim, self.num_kv_heads * self.head_dim
        bias = (q + 2 * kv) if self.qkv_bias else 0
        return 2 * self.hidden_size * q + 2 * self.hidden_size * kv + bias

    @property
    def _mla_params(self) -> int:
        """Multi-latent attention: Q through its latent (or one projection), the shared K/V
        latent with the RoPE key, its expansion to every head's no-RoPE key and value, the
        output projection, and the two latents' norms."""
        h, heads = self.hidden_size, self.num_attention_heads
        nope = self.head_dim - self.qk_rope_head_dim
        if self.q_lora_rank:
            q = h * self.q_lora_rank + self.q_lora_rank + self.q_lora_rank * heads * self.head_dim
        else:
            q = h * heads * self.head_dim
        kv = h * (self.kv_lora_rank + self.qk_rope_head_dim) + self.kv_lora_rank
        kv += self.kv_lora_rank * heads * (nope + self.v_head_dim)
        return q + kv + heads * self.v_head_dim * h

    @property
    def dense_mlp_params(self) -> int:
        return 3 * self.hidden_size * self.ffn_hidden_size  # gate, up, down (SwiGLU)

    @property
    def expert_params(self) -> int:
        """All routed experts of one MoE layer."""
        return (self.num_experts or 0) * 3 * self.hidden_size * self.moe_ffn_hidden_size

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def total_params(self) -> int:
        dense_layers = self.num_layers - self.moe_layers
        moe_layer = (
            self.expert_params
            + self.hidden_size * (self.num_experts or 0)
            + 3 * self.hidden_size * self.shared_expert_ffn_hidden_size
        )
        layer = self.attention_params + 2 * self.hidden_size + self.layer_extra_params
        layers = self.num_layers * layer
        layers += dense_layers * self.dense_mlp_params + self.moe_layers * moe_layer
        heads = 1 if self.tied_embeddings else 2
        return layers + heads * self.embedding_params + self.hidden_size

    def describe(self) -> str:
        kind = f", MoE {self.num_experts} experts top-{self.moe_top_k}" if self.num_experts else ""
        return (
            f"{self.name}: {self.total_params / 1e9:.1f} B parameters, {self.num_layers} layers, "
            f"hidden {self.hidden_size}, {self.num_attention_heads} heads "
            f"({self.num_kv_heads} KV){kind}"
        )


def load_architecture(model: str) -> Architecture:
    """From a shipped name (``llama3.1-70b``), a known Hub id, a model directory or a
    ``config.json`` path.

    Raises:
        ArchitectureError: nothing readable there; the message lists the shipped names.
    """
    path = shipped_config_dir(model) or Path(model).expanduser()
    config_file = path / "config.json" if path.is_dir() else path
    if not config_file.is_file():
        close = difflib.get_close_matches(model, shipped_names() + list(HUB_IDS), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ArchitectureError(
            f"--model '{model}' is neither a shipped architecture ({', '.join(shipped_names())}"
            f"), a known Hub id, nor a directory or file with a config.json.{hint} Fix: pass "
            f"one of those, or the path of the model's config.json."
        )
    try:
        config = json.loads(config_file.read_text())
    except json.JSONDecodeError as error:
        raise ArchitectureError(f"{config_file} is not valid JSON ({error}).") from None
    name = path.name if path.is_dir() else path.parent.name
    return from_hf_dict(config, name=name)


def from_hf_dict(config: dict[str, Any], name: str = "model") -> Architecture:
    """An ``Architecture`` from a Hugging Face config dict (its text part, if multimodal)."""
    text = config.get("text_config") or config
    try:
        heads = int(text["num_attention_heads"])
        hidden = int(text["hidden_size"])
        layers = int(text["num_hidden_layers"])
        experts = next((int(text[k]) for k in _EXPERT_KEYS if text.get(k)), None)
        ffn = int(text.get("intermediate_size") or 4 * hidden)
        # Mixtral, OLMoE, GPT-OSS: experts of intermediate_size (no separate moe_ size)
        moe_ffn = int(text.get("moe_intermediate_size") or ffn) if experts else 0
        mla = _mla_fields(text)
        head_dim = int(text.get("head_dim") or hidden // heads)
        kv_heads = int(text.get("num_key_value_heads") or heads)
        if mla:
            head_dim = int(text["qk_nope_head_dim"]) + mla["qk_rope_head_dim"]
            kv_heads = heads  # every head has its own key and value after the expansion
        return Architecture(
            name=name,
            num_layers=layers,
            hidden_size=hidden,
            ffn_hidden_size=ffn,
            num_attention_heads=heads,
            num_kv_heads=kv_heads,
            head_dim=head_dim,
            vocab_size=int(text["vocab_size"]),
            tied_embeddings=bool(text.get("tie_word_embeddings", False)),
            qkv_bias=bool(
                text.get("attention_bias") or text.get("model_type") in ("qwen2", "qwen2_moe")
            ),
            num_experts=experts,
            moe_top_k=int(text.get("num_experts_per_tok") or 0) if experts else 0,
            moe_ffn_hidden_size=moe_ffn,
            shared_expert_ffn_hidden_size=_shared_expert_ffn(text) if experts else 0,
            moe_layers=_moe_layer_count(text, layers) if experts else 0,
            max_positions=text.get("max_position_embeddings"),
            **mla,
            layer_extra_params=_layer_extras(
                text, hidden, heads, kv_heads, head_dim, experts, moe_ffn
            ),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise ArchitectureError(
            f"{name}: config lacks a decoder-only transformer field ({error})."
        ) from None


def _mla_fields(text: dict[str, Any]) -> dict[str, int]:
    if not text.get("kv_lora_rank"):
        return {}
    return {
        "q_lora_rank": int(text.get("q_lora_rank") or 0),
        "kv_lora_rank": int(text["kv_lora_rank"]),
        "qk_rope_head_dim": int(text["qk_rope_head_dim"]),
        "v_head_dim": int(text["v_head_dim"]),
    }


def _layer_extras(
    text: dict[str, Any], hidden: int, heads: int, kv_heads: int, head_dim: int,
    experts: int | None, moe_ffn: int,
) -> int:  # fmt: skip
    """Per-layer parameters outside the projections, the MLP and the two pre-norms."""
    model_type = text.get("model_type", "")
    extra = 0
    if model_type in ("qwen3", "qwen3_moe", "gemma3_text", "gemma3"):  # per-head Q/K norms
        extra += 2 * head_dim
    if model_type == "olmoe":  # Q/K norms over the whole width
        extra += (heads + kv_heads) * head_dim
    if model_type.startswith("gemma2") or model_type.startswith("gemma3"):  # sandwich norms
        extra += 2 * hidden
    if text.get("attention_bias") and not text.get("kv_lora_rank"):
        extra += hidden  # the output projection's bias (Q/K/V biases: ``qkv_bias``)
    if model_type == "gpt_oss":  # sinks, router bias, expert biases
        extra += heads + (experts or 0) * (1 + 2 * moe_ffn + hidden)
    return extra


def _shared_expert_ffn(text: dict[str, Any]) -> int:
    if text.get("shared_expert_intermediate_size"):  # Qwen2-MoE
        return int(text["shared_expert_intermediate_size"])
    shared = int(text.get("n_shared_experts") or 0)  # DeepSeek, GLM-MoE
    return shared * int(text.get("moe_intermediate_size") or 0)


def _moe_layer_count(text: dict[str, Any], layers: int) -> int:
    dense = set(text.get("mlp_only_layers") or [])
    step = int(text.get("decoder_sparse_step") or 1)
    first_dense = int(text.get("first_k_dense_replace") or 0)
    return sum(
        1 for i in range(layers) if i not in dense and (i + 1) % step == 0 and i >= first_dense
    )

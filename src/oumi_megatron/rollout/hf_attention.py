"""Which Hugging Face attention implementation computes a model as published.

Hugging Face's SDPA path drops Gemma 2's attention-logit soft-capping (SDPA has no such step;
its eager path applies it, as vLLM and our core attention do); GPT-OSS has no SDPA path.
Wherever this project runs a Hugging Face model to compare with or to sample from (the parity
gate, ``verify``, the CPU rollout engine, the tests' references), it asks here.
"""

from __future__ import annotations

from pathlib import Path

#: Hugging Face model types without an SDPA path (GPT-OSS: attention sinks).
EAGER_ONLY = ("gpt_oss",)


def hf_attn_implementation(config, preferred: str = "sdpa") -> str:
    """``"eager"`` for a config whose attention soft-caps its logits or that has no SDPA path;
    else ``preferred``."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    softcap = getattr(text, "attn_logit_softcapping", None)
    return "eager" if softcap or text.model_type in EAGER_ONLY else preferred


def hf_config_and_attention(
    model_dir: str | Path, preferred: str = "sdpa", trust_remote_code: bool = False
):
    """The model's config (read once, to pass on as ``from_pretrained(config=...)``) and the
    attention implementation to load it with."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(
        model_dir, local_files_only=True, trust_remote_code=trust_remote_code
    )
    return config, hf_attn_implementation(config, preferred)

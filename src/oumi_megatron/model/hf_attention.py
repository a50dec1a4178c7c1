"""Which Hugging Face attention implementation computes a model as published.

Hugging Face's SDPA path drops Gemma 2's attention-logit soft-capping (SDPA has no such step;
its eager path applies it, as vLLM and our core attention do). Wherever this project runs a
Hugging Face model to compare with or to sample from (the parity gate, ``verify``, the CPU
rollout engine, the tests' references), it asks here.
"""

from __future__ import annotations

from pathlib import Path


def hf_attn_implementation(config, preferred: str = "sdpa") -> str:
    """``"eager"`` for a config whose attention soft-caps its logits; else ``preferred``."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return "eager" if getattr(text, "attn_logit_softcapping", None) else preferred


def hf_attn_implementation_of(
    model_dir: str | Path, preferred: str = "sdpa", trust_remote_code: bool = False
) -> str:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(
        model_dir, local_files_only=True, trust_remote_code=trust_remote_code
    )
    return hf_attn_implementation(config, preferred)

"""Which model families the trainer supports, declared: an architecture not listed here is
refused when the config is validated, before any heavy import or conversion.

Every declared (family, layout) pair is a case of the HF ⇄ Megatron parity test
(``tests/integration/parity_worker.py``: logits within 1e-5 in fp32, bit-identical export),
which ``tests/unit/test_model_support.py`` checks; ``docs/support_matrix.md`` is generated
from this table (``scripts/gen_support_matrix.py``).
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from pathlib import Path

from oumi_megatron.parallel.layout import ParallelLayout


@dataclass(frozen=True)
class Family:
    name: str
    architectures: tuple[str, ...]
    """Hugging Face ``architectures`` class names."""
    fixture: str
    """The tiny random model of this family in the tests (``testing.tiny_models``); also its
    Hugging Face ``model_type`` unless ``model_type`` says otherwise."""
    layouts: tuple[ParallelLayout, ...]
    """Layouts whose conversion is exact (parity-tested)."""
    trained: tuple[str, ...] = ()
    """Layouts of the GRPO training test (``tests/integration/test_grpo_train.py``) that
    train this family end to end (rollout, update, weight sync, export)."""
    vllm_sync: bool = False
    """Megatron's weights synced into a colocated vLLM engine on GPU, which then samples as
    Hugging Face's model of those weights (``tests/gpu/test_family_vllm_sync.py``)."""
    moe: bool = False
    model_type: str | None = None


_TP1, _TP2, _PP2 = ParallelLayout(), ParallelLayout(tp=2), ParallelLayout(pp=2)

FAMILIES: tuple[Family, ...] = (
    Family(
        "Llama", ("LlamaForCausalLM",), "llama",
        (_TP1, _TP2, _PP2, ParallelLayout(tp=2, pp=2), ParallelLayout(pp=2, vpp=2),
         ParallelLayout(cp=2), ParallelLayout(cp=4), ParallelLayout(tp=2, cp=2)),
        trained=("DP2", "PP2xVPP2", "CP2", "TP2_gloo_2workers", "TP2_topp_topk"), vllm_sync=True,
    ),
    Family(
        "Qwen2 / Qwen2.5", ("Qwen2ForCausalLM",), "qwen2",
        (_TP1, _TP2, _PP2, ParallelLayout(tp=2, pp=2), ParallelLayout(pp=2, cp=2)),
        vllm_sync=True,
    ),
    Family("Qwen3", ("Qwen3ForCausalLM",), "qwen3", (_TP1, _TP2, _PP2), vllm_sync=True),
    Family("Mistral", ("MistralForCausalLM",), "mistral", (_TP1, _TP2, _PP2), vllm_sync=True),
    Family(
        "Qwen3-MoE", ("Qwen3MoeForCausalLM",), "qwen3_moe",
        (_TP1, _TP2, _PP2, ParallelLayout(ep=2)), trained=("EP2_moe",), moe=True, vllm_sync=True,
    ),
    Family(
        "DeepSeek-V3", ("DeepseekV3ForCausalLM",), "deepseek_v3",
        (_TP1, _TP2, _PP2, ParallelLayout(ep=2)), trained=("EP2_deepseek",), moe=True,
        vllm_sync=True,
    ),
    Family(
        "Mixtral", ("MixtralForCausalLM",), "mixtral",
        (_TP1, _TP2, _PP2, ParallelLayout(ep=2)), moe=True, vllm_sync=True,
    ),
    Family(  # Q/K norms over the whole width (summed over tensor-parallel ranks)
        "OLMoE", ("OlmoeForCausalLM",), "olmoe", (_TP1, _TP2, _PP2, ParallelLayout(ep=2)),
        moe=True, vllm_sync=True,
    ),
    Family(
        "GLM-4.5 / GLM-4-MoE", ("Glm4MoeForCausalLM",), "glm4_moe",
        (_TP1, _TP2, _PP2, ParallelLayout(ep=2)), moe=True, vllm_sync=True,
    ),
    Family(  # zero-centred and sandwich norms, sliding windows, local/global rotary bases
        "Gemma 3 (text)", ("Gemma3ForCausalLM",), "gemma3",
        (_TP1, _TP2, _PP2, ParallelLayout(cp=2)), trained=("PP2_gemma3",),
        model_type="gemma3_text", vllm_sync=True,
    ),
    Family(  # attention sinks, biased experts with the clamped SwiGLU (expert TP 1), YaRN
        "GPT-OSS", ("GptOssForCausalLM",), "gpt_oss",
        (_TP1, ParallelLayout(tp=2, etp=1), _PP2, ParallelLayout(ep=2)), moe=True,
        vllm_sync=True,
    ),
    Family(  # as Gemma 3 with soft-capped attention and final logits, one rotary base
        "Gemma 2", ("Gemma2ForCausalLM",), "gemma2", (_TP1, _TP2, _PP2, ParallelLayout(cp=2)),
        vllm_sync=True,
    ),
)  # fmt: skip

#: Architectures users ask for that do not convert exactly yet, and why (checked on tiny
#: random models of each family, fp32, CPU).
NOT_YET: dict[str, str] = {
    "Phi3ForCausalLM": "Megatron-Bridge has no Phi-3 mapping",
}

#: The supported family closest to an unsupported architecture (what to try instead).
NEAREST: dict[str, str] = {
    "DeepseekV2ForCausalLM": "DeepSeek-V3",
    "Qwen2MoeForCausalLM": "Qwen3-MoE",
    "Gemma3ForConditionalGeneration": "Gemma 3 (text)",
    "Phi3ForCausalLM": "Llama",
}


class UnsupportedArchitecture(ValueError):
    """The model's architecture is not among ``FAMILIES``."""


def family_of(architecture: str) -> Family | None:
    return next((f for f in FAMILIES if architecture in f.architectures), None)


def check_supported(config: dict) -> Family:
    """The family of a Hugging Face ``config.json`` dict.

    Raises:
        UnsupportedArchitecture: with the supported families and the nearest one.
    """
    architectures = config.get("architectures") or []
    for architecture in architectures:
        family = family_of(architecture)
        if family is not None:
            return family
    if not architectures:  # a config saved without a model class: its model_type decides
        by_type = {f.model_type or f.fixture: f for f in FAMILIES}
        if config.get("model_type") in by_type:
            return by_type[config["model_type"]]
    named = architectures[0] if architectures else f"model_type {config.get('model_type')!r}"
    supported = ", ".join(f.name for f in FAMILIES)
    why = f" ({NOT_YET[named]})" if named in NOT_YET else ""
    nearest = NEAREST.get(named) or _closest(named)
    hint = f" The nearest supported family is {nearest}." if nearest else ""
    raise UnsupportedArchitecture(
        f"model.model_name: architecture {named} is not supported{why}. Supported families: "
        f"{supported} (docs/support_matrix.md).{hint} Fix: use a model of a supported family."
    )


def check_model_dir(model_dir: str | Path) -> Family:
    """``check_supported`` on a model directory's ``config.json`` (plain JSON, no imports)."""
    config = json.loads((Path(model_dir) / "config.json").read_text())
    return check_supported(config)


def _closest(architecture: str) -> str | None:
    names = {a: f.name for f in FAMILIES for a in f.architectures}
    match = difflib.get_close_matches(architecture, list(names), n=1, cutoff=0.6)
    return names[match[0]] if match else None

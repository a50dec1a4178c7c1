"""Tiny random-weight checkpoints of real architectures, written like a hub download.

Used by tests and by the demo: `python -m oumi_megatron.testing.tiny_models llama OUT_DIR`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from oumi_megatron.testing.tokenizer import save_tokenizer

VOCAB_SIZE = 512  # tokenizer uses fewer ids; the rest are never produced by it
ARCHITECTURES = (
    "llama", "qwen2", "qwen3", "mistral", "qwen3_moe", "deepseek_v3", "glm4_moe", "mixtral",
    "olmoe", "gemma3", "gemma2", "gpt_oss",
)  # fmt: skip
# Shared by every model here: the offline tokenizer's ids and vocabulary (testing/tokenizer.py)
# and the RMSNorm epsilon.
_SHARED_FIELDS = dict(
    vocab_size=VOCAB_SIZE, tie_word_embeddings=False, bos_token_id=0, eos_token_id=2,
    pad_token_id=0, rms_norm_eps=1e-6,
)  # fmt: skip
# DeepSeek-V3's multi-latent attention: tiny head sizes for CPU tests, and the published ones,
# the only ones vLLM's MLA kernels accept.
_TINY_MLA = dict(kv_lora_rank=16, qk_rope_head_dim=8, qk_nope_head_dim=16, v_head_dim=16)
_PUBLISHED_MLA = dict(kv_lora_rank=512, qk_rope_head_dim=64, qk_nope_head_dim=128, v_head_dim=128)


def tiny_config(arch: str, num_layers: int = 4, vllm_kernels: bool = False):
    """A small config of a real architecture: GQA (4 heads / 2 KV heads), tied embeddings off.

    ``vllm_kernels``: head sizes that vLLM's attention kernels accept (DeepSeek-V3's published
    MLA sizes; the other families' tiny sizes already are)."""
    from transformers import (
        DeepseekV3Config,
        Gemma2Config,
        Gemma3TextConfig,
        Glm4MoeConfig,
        GptOssConfig,
        LlamaConfig,
        MistralConfig,
        MixtralConfig,
        OlmoeConfig,
        Qwen2Config,
        Qwen3Config,
        Qwen3MoeConfig,
    )

    common = dict(
        **_SHARED_FIELDS,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        rope_theta=10000.0,
    )
    if arch == "llama":
        return LlamaConfig(**common, architectures=["LlamaForCausalLM"])
    if arch == "qwen2":
        return Qwen2Config(**common, architectures=["Qwen2ForCausalLM"])
    if arch == "qwen3":  # per-head Q/K RMSNorm, explicit head_dim
        return Qwen3Config(**common, head_dim=16, architectures=["Qwen3ForCausalLM"])
    if arch == "mistral":  # Mistral v0.3 and later: no sliding window
        return MistralConfig(**common, sliding_window=None, architectures=["MistralForCausalLM"])
    if arch == "qwen3_moe":
        return Qwen3MoeConfig(
            **common,
            head_dim=16,
            num_experts=4,
            num_experts_per_tok=2,
            moe_intermediate_size=32,
            decoder_sparse_step=1,
            norm_topk_prob=True,
            architectures=["Qwen3MoeForCausalLM"],
        )
    # DeepSeek-V3 and GLM-4-MoE: a dense first layer, then MoE layers with a shared expert and
    # sigmoid routing with an expert bias; DeepSeek-V3 with multi-latent attention.
    # One multi-token-prediction layer in the config, as published (not built: model/provider.py).
    moe = dict(moe_intermediate_size=32, n_routed_experts=4, num_experts_per_tok=2,
               n_shared_experts=1, n_group=1, topk_group=1, first_k_dense_replace=1,
               num_nextn_predict_layers=1)  # fmt: skip
    if arch == "deepseek_v3":  # multi-latent attention: one K/V per head, as published
        mla = _PUBLISHED_MLA if vllm_kernels else _TINY_MLA
        return DeepseekV3Config(
            **{**common, "num_key_value_heads": 4}, **moe, **mla, q_lora_rank=32,
            head_dim=mla["qk_rope_head_dim"], rope_scaling=None,
            # the published routing fields: vLLM reads them (transformers' class does not)
            topk_method="noaux_tc", scoring_func="sigmoid",
            architectures=["DeepseekV3ForCausalLM"],
        )  # fmt: skip
    if arch == "glm4_moe":
        return Glm4MoeConfig(**common, **moe, head_dim=16, architectures=["Glm4MoeForCausalLM"])
    if arch == "mixtral":  # every layer MoE, experts of intermediate_size, no sliding window
        return MixtralConfig(
            **{**common, "intermediate_size": 32}, num_local_experts=4, num_experts_per_tok=2,
            sliding_window=None, architectures=["MixtralForCausalLM"],
        )  # fmt: skip
    if arch == "olmoe":  # Q/K norms over the whole width; one K/V per head, as published
        return OlmoeConfig(
            **{**common, "num_key_value_heads": 4, "intermediate_size": 32}, num_experts=4,
            num_experts_per_tok=2, architectures=["OlmoeForCausalLM"],
        )  # fmt: skip
    if arch == "gemma3":  # windows of 8 tokens (the tests' sequences are longer), full
        # attention every 2nd layer with its own rotary base, Q/K norms, a query scale of its
        # own, tied embeddings
        rope = {"full_attention": {"rope_type": "default", "rope_theta": 1e6},
                "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}}  # fmt: skip
        fields = {k: v for k, v in common.items() if k != "rope_theta"}
        return Gemma3TextConfig(
            **{**fields, "tie_word_embeddings": True}, rope_parameters=rope, head_dim=16,
            sliding_window=8,
            layer_types=["sliding_attention", "full_attention"] * (num_layers // 2)
            + ["sliding_attention"] * (num_layers % 2),
            query_pre_attn_scalar=24, hidden_activation="gelu_pytorch_tanh",
            architectures=["Gemma3ForCausalLM"],
        )  # fmt: skip
    if arch == "gemma2":  # windows of 8 tokens on every 2nd layer, soft-capped attention and
        # final logits (caps small enough to bite on random weights), tied embeddings
        return Gemma2Config(
            **{**common, "tie_word_embeddings": True}, head_dim=16, sliding_window=8,
            query_pre_attn_scalar=24, attn_logit_softcapping=2.0, final_logit_softcapping=3.0,
            hidden_activation="gelu_pytorch_tanh", architectures=["Gemma2ForCausalLM"],
        )  # fmt: skip
    if arch == "gpt_oss":  # attention sinks, windows of 8 on every 2nd layer, biased experts
        # with the clamped SwiGLU (gate/up not square: Bridge tells their orientation by
        # shape), YaRN rotary embedding (the published scaling)
        return GptOssConfig(
            **{**common, "intermediate_size": 48}, head_dim=16, num_local_experts=4,
            num_experts_per_tok=2, sliding_window=8, architectures=["GptOssForCausalLM"],
        )  # fmt: skip
    raise ValueError(f"arch must be one of {ARCHITECTURES}, got {arch!r}")


def build_tiny_model(
    arch: str, directory: str | Path, seed: int = 0, num_layers: int = 4, vllm_kernels: bool = False
) -> Path:
    """Write a random-weight fp32 model (safetensors), tokenizer and generation config."""
    import torch
    from transformers import AutoModelForCausalLM

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = tiny_config(arch, num_layers=num_layers, vllm_kernels=vllm_kernels)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    # Random init has ~0.02 std; a larger spread gives logits that actually test parity.
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() > 1:
                param.normal_(0.0, 0.08)
            elif arch.startswith("gemma"):  # zero-centred norm scales: away from 0 too
                param.normal_(0.0, 0.2)
        for name, param in model.named_parameters():
            if arch == "gpt_oss" and name.endswith(("sinks", "bias")):  # sinks, biases that matter
                param.normal_(0.0, 0.5)
    return _write_checkpoint(model, directory)


def _write_checkpoint(model, directory: Path) -> Path:
    """Safetensors weights, the offline tokenizer and a sampling generation config."""
    from transformers import GenerationConfig

    model.save_pretrained(directory, safe_serialization=True)
    save_tokenizer(directory)
    GenerationConfig(eos_token_id=2, pad_token_id=0, do_sample=True).save_pretrained(directory)
    return directory


def build_tiny_pair(
    arch: str, root: str | Path, num_layers: int = 4, vllm_kernels: bool = False
) -> tuple[Path, Path]:
    """Two models of one architecture under ``root/a`` and ``root/b`` with different random
    weights (seeds 0 and 1): weight-sync tests send one and check the other becomes it."""
    root = Path(root)
    return tuple(  # type: ignore[return-value]
        build_tiny_model(arch, root / name, seed, num_layers, vllm_kernels)
        for name, seed in (("a", 0), ("b", 1))
    )


def build_llama(
    directory: str | Path,
    hidden: int,
    layers: int,
    vocab: int,
    heads: int = 8,
    kv_heads: int = 4,
    max_len: int = 2048,
) -> Path:
    """A random Llama-shaped checkpoint of any size (benchmarks), written offline."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=hidden * 11 // 4,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max_len,
        tie_word_embeddings=False,
        architectures=["LlamaForCausalLM"],
    )
    AutoModelForCausalLM.from_config(config).save_pretrained(directory)
    save_tokenizer(directory)
    return Path(directory)


#: Larger random shapes for GPU runs: Qwen2.5-0.5B's body (hidden 896, 24 layers, 14 heads / 2
#: KV heads, FFN 4864) with the test tokenizer's vocabulary, so sampled ids decode to text and
#: the synthetic arithmetic rewards vary from the first step. 358 M parameters, bf16 on disk.
GPU_SHAPES = {
    "qwen2_0p5b_body": dict(
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
    ),  # fmt: skip
    # Qwen2.5-1.5B's published shape, vocabulary and tied embeddings included (1.54 B
    # parameters): sampled ids beyond the test tokenizer decode to nothing, so rewards stay ~0;
    # for timing the step, the sync and the rollout.
    "qwen2.5_1.5b": dict(
        hidden_size=1536,
        intermediate_size=8960,
        num_hidden_layers=28,
        num_attention_heads=12,
        num_key_value_heads=2,
        vocab_size=151936,
        tie_word_embeddings=True,
    ),  # fmt: skip
}


def build_gpu_shape(name: str, directory: str | Path, seed: int = 0) -> Path:
    """Write the random-weight Qwen2 checkpoint `GPU_SHAPES[name]` (bf16 safetensors,
    tokenizer, generation config); HF's default init (std 0.02)."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = Qwen2Config(
        **{**_SHARED_FIELDS, **GPU_SHAPES[name]},
        max_position_embeddings=2048,
        rope_theta=1000000.0,
        architectures=["Qwen2ForCausalLM"],
    )
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return _write_checkpoint(model.to(torch.bfloat16), directory)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("arch", choices=ARCHITECTURES + tuple(GPU_SHAPES))
    parser.add_argument("out_dir")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from oumi_megatron.console import setup_console

    setup_console()  # before transformers is imported
    if args.arch in GPU_SHAPES:
        print(build_gpu_shape(args.arch, args.out_dir, seed=args.seed))
    else:
        print(build_tiny_model(args.arch, args.out_dir, seed=args.seed))


if __name__ == "__main__":
    main()

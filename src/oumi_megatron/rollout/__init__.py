"""Rollout side of GRPO: engines that sample completions and take weights by HF name.

Nothing here imports Megatron: the trainer converts its weights to Hugging Face names and
pushes ``(hf_name, tensor)`` pairs through a transport (:mod:`.weight_sync`).
Engines are imported from their modules (``rollout.torch_engine``, ``rollout.vllm_engine``)
so that importing this package stays cheap and never needs transformers or vLLM.
"""

from oumi_megatron.rollout.base import (
    FinishReason,
    RolloutEngine,
    RolloutSample,
    SamplingParams,
    derive_seed,
)
from oumi_megatron.rollout.buckets import bucketize, pack_bucket, unpack_bucket
from oumi_megatron.rollout.hf_weights import WeightUpdateError

__all__ = [
    "FinishReason",
    "RolloutEngine",
    "RolloutSample",
    "SamplingParams",
    "WeightUpdateError",
    "bucketize",
    "derive_seed",
    "pack_bucket",
    "unpack_bucket",
]

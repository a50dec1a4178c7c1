"""The parity gate: before training, the converted model's first layers must compute what the
Hugging Face model's do, or the run stops.

Cheap by design: the ranks of one model replica's first pipeline stage run the embedding and
the first ``GATE_LAYERS`` decoder layers of their Megatron chunk on a few fixed tokens, and
compare each layer's output with a Hugging Face model truncated to those layers (its weights
read from the same checkpoint). A mapping or an architecture detail that the conversion gets
wrong (a norm, an attention variant, an activation, expert routing) shows in the first layers'
hidden states; which layer first differs is reported. The output layer's mapping is covered by
the exact export round trip. Every rank learns the verdict (one all-reduce).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from oumi_megatron.stops import EXIT_PARITY, RunStopped

logger = logging.getLogger(__name__)

GATE_LAYERS = 2
GATE_TOKENS = (2, 16)  # sequences × tokens
#: Largest |Δ| allowed per token, relative to that token's largest |hidden state| in the
#: reference (at least 1), at the ``QUANTILE`` of the tokens; the reference runs in fp32.
QUANTILE = 0.9
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 3e-2, torch.float16: 1e-2}


class ParityGateError(RunStopped):
    """The converted model does not compute what the Hugging Face model does."""

    exit_code = EXIT_PARITY


@dataclass(frozen=True)
class GateResult:
    max_abs_diff: float
    """Largest per-layer figure (90th percentile over tokens of the per-token relative |Δ|;
    0 where this rank compared none)."""
    first_bad_layer: int | None
    layers: int
    seconds: float


def check_parity(
    chunks: list[torch.nn.Module], hf_dir: str | Path, dtype: torch.dtype
) -> GateResult:
    """Compare, raise ``ParityGateError`` (on every rank) when the conversion is not exact."""
    import torch.distributed as dist
    from megatron.core import parallel_state

    start = time.perf_counter()
    tolerance = TOLERANCE[dtype]
    diffs: list[float] = []
    # Context parallelism splits every sequence over ranks; the layers' weights are the same
    # at CP1, which the parity tests cover, so the gate compares only without it.
    context_parallel = parallel_state.get_context_parallel_world_size() > 1
    # One model replica compares (the first stage of expert-data-parallel rank 0: its TP and EP
    # ranks take part in the forward); the other replicas hold the same weights.
    compares = (
        parallel_state.is_pipeline_first_stage(ignore_virtual=True)
        and parallel_state.get_expert_data_parallel_rank() == 0
        and not context_parallel
    )
    if compares:
        diffs = _first_layer_diffs(chunks[0], Path(hf_dir))
    # [max relative diff, first bad layer (or a large number)] agreed by every rank; on the
    # device the collective backend needs (NCCL: the GPU)
    bad = [i for i, d in enumerate(diffs) if d > tolerance]
    device = next(chunks[0].parameters()).device
    verdict = torch.tensor([max(diffs, default=0.0), float(bad[0]) if bad else 1e9], device=device)
    if dist.is_initialized():
        worst = verdict.clone()
        dist.all_reduce(worst[:1], op=dist.ReduceOp.MAX)
        dist.all_reduce(worst[1:], op=dist.ReduceOp.MIN)
        verdict = worst
    first_bad = None if verdict[1].item() >= 1e9 else int(verdict[1].item())
    result = GateResult(verdict[0].item(), first_bad, len(diffs), time.perf_counter() - start)
    if first_bad is not None:
        from oumi_megatron.model.support import check_model_dir

        family = check_model_dir(hf_dir).name
        raise ParityGateError(
            f"the converted {family} model does not compute what the Hugging Face model does: "
            f"decoder layer {first_bad} differs by {result.max_abs_diff:.3g} (relative, 90th "
            f"percentile over tokens; tolerance {tolerance:g} in "
            f"{str(dtype).removeprefix('torch.')}). Training would "
            f"change a different model. Fix: report it with the model's config.json; "
            f"megatron.parity_gate: false skips this check at your own risk."
        )
    logger.info("parity gate: first %d layer(s) match Hugging Face (max relative |Δ| %.3g, %.2f s)",
                GATE_LAYERS, result.max_abs_diff, result.seconds)  # fmt: skip
    return result


def _first_layer_diffs(chunk: torch.nn.Module, hf_dir: Path) -> list[float]:
    layers = _decoder_layers(chunk)[:GATE_LAYERS]
    config = layers[0].config
    split = config.tensor_model_parallel_size if config.sequence_parallel else 1
    tokens = _gate_tokens(hf_dir, split)
    ours = _megatron_layer_outputs(chunk, layers, tokens)
    # The reference in fp32 (on the CPU): what the tolerance then measures is the converted
    # model's own rounding in its dtype.
    reference = _hf_layer_outputs(hf_dir, len(layers), tokens, torch.float32)
    diffs = []
    for mine, theirs in zip(ours, reference, strict=True):
        mine = mine.transpose(0, 1).float().cpu()  # Megatron [s, b, h] -> [b, s, h]
        theirs = theirs.float().cpu()
        # Per token, relative to that token's largest activation; the layer's figure is the
        # 90th percentile over tokens: in bf16 a router may pick another expert for a token
        # whose top scores nearly tie (a large difference on that token alone), while a
        # wrong conversion moves every token.
        scale = theirs.abs().amax(-1).clamp(min=1.0)
        per_token = (mine - theirs).abs().amax(-1) / scale
        diffs.append(torch.quantile(per_token.flatten(), QUANTILE).item())
    return diffs


def _decoder_layers(chunk: torch.nn.Module) -> list[torch.nn.Module]:
    module = chunk
    while not hasattr(module, "decoder") and hasattr(module, "module"):
        module = module.module  # DDP / mixed-precision wrappers
    return list(module.decoder.layers)


def _gate_tokens(hf_dir: Path, multiple: int = 1) -> torch.Tensor:
    """The probe's token ids; its length a multiple of ``multiple`` (the TP size under sequence
    parallelism, which splits the sequence)."""
    import json

    vocab = json.loads((hf_dir / "config.json").read_text()).get("vocab_size", 1000)
    generator = torch.Generator().manual_seed(1234)
    rows, length = GATE_TOKENS
    from oumi_megatron.data.packing import round_up

    shape = (rows, round_up(length, multiple))
    return torch.randint(3, min(int(vocab), 1000), shape, generator=generator)


def _megatron_layer_outputs(chunk, layers, tokens: torch.Tensor) -> list[torch.Tensor]:
    outputs: list[torch.Tensor] = []

    def keep(module, _inputs, output):
        hidden = (output[0] if isinstance(output, tuple) else output).detach()
        if module.config.sequence_parallel:  # this TP rank's part of the sequence: all of it
            from megatron.core.tensor_parallel import gather_from_sequence_parallel_region

            hidden = gather_from_sequence_parallel_region(hidden, tensor_parallel_output_grad=False)
        outputs.append(hidden)

    device = next(chunk.parameters()).device
    positions = torch.arange(tokens.shape[1]).unsqueeze(0).expand_as(tokens)
    hooks = [layer.register_forward_hook(keep) for layer in layers]
    was_training = chunk.training
    chunk.eval()
    try:
        with torch.no_grad():
            chunk(input_ids=tokens.to(device), position_ids=positions.to(device),
                  attention_mask=None)  # fmt: skip
    finally:
        for hook in hooks:
            hook.remove()
        chunk.train(was_training)
    return outputs


def _hf_layer_outputs(hf_dir: Path, count: int, tokens: torch.Tensor, dtype) -> list[torch.Tensor]:
    """The first ``count`` decoder layers' outputs of the HF model truncated to them."""
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    from oumi_megatron.rollout.hf_attention import hf_attn_implementation

    config = AutoConfig.from_pretrained(hf_dir, trust_remote_code=False, local_files_only=True)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    text.num_hidden_layers = count
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the later layers' weights are "unused" on purpose
    try:
        model = AutoModelForCausalLM.from_pretrained(
            hf_dir, config=config, dtype=dtype, local_files_only=True,
            attn_implementation=hf_attn_implementation(config),
        ).eval()  # fmt: skip
    finally:
        hf_logging.set_verbosity(verbosity)
    outputs: list[torch.Tensor] = []

    def keep(_module, _inputs, output):
        outputs.append((output[0] if isinstance(output, tuple) else output).detach())

    hooks = [layer.register_forward_hook(keep) for layer in model.model.layers]
    try:
        with torch.no_grad():
            model.model(input_ids=tokens)
    finally:
        for hook in hooks:
            hook.remove()
    return outputs

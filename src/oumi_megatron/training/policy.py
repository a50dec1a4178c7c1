"""The policy on Megatron-Core: log-probs (forward only) and GRPO updates through Megatron's
pipeline schedule, for any TP/PP/VPP/DP layout.

Loss normalisation: every micro-batch returns its share of the *global* loss (divided by the
step's global token/sequence counts, see `algorithms.aggregation`). Megatron must therefore not
rescale: `calculate_per_token_loss=True` stops the schedule dividing by the number of
micro-batches and makes DDP sum (not average) gradients over data-parallel ranks, and the
finalize hook is called without a token count. The loss then does not depend on how the batch
is split into micro-batches or ranks. MoE routers' aux losses get their divisor through
`training.moe_loss` instead.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from functools import partial

import torch
from megatron.core import parallel_state
from megatron.core.distributed import finalize_model_grads
from megatron.core.pipeline_parallel import get_forward_backward_func
from megatron.core.utils import get_model_config, unwrap_model

from oumi_megatron.algorithms.grpo import GrpoLossConfig, grpo_loss
from oumi_megatron.algorithms.logprobs import (
    ROLLOUT_GAP,
    max_logprob_gap,
    vocab_parallel_logprobs,
)
from oumi_megatron.algorithms.rollout_correction import within_row
from oumi_megatron.data.packing import MicroBatch, PackedBatch
from oumi_megatron.model.cp_attention import packed_seq_params
from oumi_megatron.training import moe_loss


def prepare_model_config(model: list[torch.nn.Module]) -> None:
    """Wire Megatron's hooks the way its own training loop does, minus token rescaling."""
    config = get_model_config(model[0])
    config.calculate_per_token_loss = True
    # Micro-batches differ in length (packing, padding); the interleaved schedule (VPP chunks)
    # cannot exchange varying shapes, so there step_batches pads them to one shape instead.
    config.variable_seq_lengths = len(model) == 1
    config.finalize_model_grads_func = _finalize_without_token_scaling
    config.no_sync_func = [chunk.no_sync for chunk in model] if len(model) > 1 else model[0].no_sync


def _finalize_without_token_scaling(model, num_tokens=None, pg_collection=None, **kwargs):
    # Losses are already normalised by global counts; Megatron would divide by num_tokens again.
    return finalize_model_grads(model, num_tokens=None, pg_collection=pg_collection, **kwargs)


def sequence_first_logits(
    *, hidden_states, output_layer, output_weight, runtime_gather_output, scale_logits, **_
) -> torch.Tensor:
    """Megatron's ``output_processor`` hook: the logits ``GPTModel`` computes, returned as a
    [B, S, V] view of their sequence-first [S, B, V] memory. Without it ``GPTModel`` returns
    ``logits.transpose(0, 1).contiguous()``: with B > 1 rows a copy of the whole tokens ×
    vocabulary block, and another of its gradient. The log-prob kernels read the view in
    memory order (`algorithms.logprobs`)."""
    logits, _ = output_layer(
        hidden_states, weight=output_weight, runtime_gather_output=runtime_gather_output
    )
    return scale_logits(logits).transpose(0, 1)


def takes_output_processor(chunk: torch.nn.Module) -> bool:
    """Whether the wrapped model's forward has Megatron's ``output_processor`` hook (GPTModel
    does; a model class that overrides ``forward`` without it keeps its own output path)."""
    model = unwrap_model(chunk)
    return "output_processor" in inspect.signature(model.forward).parameters


class MegatronPolicy:
    """Model chunks + optimizer + LR scheduler of one rank (no optimizer: a frozen reference).

    Log-probs and entropy are of the distribution the rollout engine samples from:
    softmax(logits / temperature), truncated by `top_k` (None: off) and `top_p` (1: off).
    The reference policy keeps the full distribution: its top-k/top-p set is not the
    policy's, so a sampled token could be outside it (log-prob -inf, infinite KL).
    """

    def __init__(
        self,
        model,
        temperature: float,
        optimizer=None,
        scheduler=None,
        *,
        top_k: int | None = None,
        top_p: float = 1.0,
    ):
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.temperature = temperature
        self.top_k, self.top_p = top_k, top_p
        self.device = next(model[0].parameters()).device
        self._sequence_first = takes_output_processor(model[0])
        if optimizer is not None:
            prepare_model_config(model)

    # ---- forward ---------------------------------------------------------------------------

    def _vocab_shard(self, logits: torch.Tensor) -> tuple[int, object]:
        tp_rank = parallel_state.get_tensor_model_parallel_rank()
        return tp_rank * logits.shape[-1], parallel_state.get_tensor_model_parallel_group()

    def _forward(self, chunk, batch: MicroBatch) -> torch.Tensor:
        packed = None
        if isinstance(batch, PackedBatch):
            packed = packed_seq_params(batch.packed_seq_kwargs())
        extra = {"output_processor": sequence_first_logits} if self._sequence_first else {}
        return chunk(
            input_ids=batch.input_ids,
            position_ids=batch.position_ids,
            attention_mask=None,
            packed_seq_params=packed,
            **extra,
        )

    @property
    def truncates(self) -> bool:
        """Whether top-k/top-p sampling is on (vLLM treats top_k >= vocabulary as off)."""
        return self.top_k is not None or self.top_p < 1.0

    def token_logprobs(
        self,
        logits: torch.Tensor,
        batch: MicroBatch,
        *,
        full: bool = False,
        with_entropy: bool = False,
        overwrite_logits: bool = False,
    ):
        """Position-aligned log p(labels) under the sampling distribution (`full`: untruncated);
        ``with_entropy``: and its entropy per position, from the same pass over the logits;
        ``overwrite_logits``: the backward writes the logits' gradient over them (their only
        use, see `algorithms.logprobs.vocab_parallel_logprobs`)."""
        vocab_start, group = self._vocab_shard(logits)
        top_k, top_p = (None, 1.0) if full else (self.top_k, self.top_p)
        return vocab_parallel_logprobs(
            logits, batch.labels, vocab_start, self.temperature, group, top_k=top_k, top_p=top_p,
            with_entropy=with_entropy, overwrite_logits=overwrite_logits,
        )  # fmt: skip

    def _run(self, batches: list[MicroBatch], loss_func: Callable, forward_only: bool) -> list:
        batches = [b.to(self.device) for b in batches]

        def forward_step(data_iterator, chunk):
            batch = next(data_iterator)
            return self._forward(chunk, batch), partial(loss_func, batch)

        for chunk in self.model:
            chunk.train(not forward_only)
        iterators = [iter(batches) for _ in self.model]
        return get_forward_backward_func()(
            forward_step_func=forward_step,
            data_iterator=iterators if len(self.model) > 1 else iterators[0],
            model=self.model if len(self.model) > 1 else self.model[0],
            num_microbatches=len(batches),
            # The whole sequence length: the schedule divides it by the context-parallel size.
            seq_length=max(b.input_ids.shape[1] for b in batches)
            * parallel_state.get_context_parallel_world_size(),
            micro_batch_size=max(b.input_ids.shape[0] for b in batches),
            forward_only=forward_only,
        )

    @torch.no_grad()
    def compute_logprobs(self, batches: list[MicroBatch]) -> list[torch.Tensor] | None:
        """Log-probs of every micro-batch, laid out like its ``input_ids`` and left on the
        device (last pipeline stage; None elsewhere): ready to be the batch's aux values."""

        def collect(batch, logits):
            logprobs = self.token_logprobs(logits, batch)
            return logits.new_zeros(()), torch.tensor(1), {"logprobs": logprobs.detach()}

        outputs = self._run(batches, collect, forward_only=True)
        if not parallel_state.is_pipeline_last_stage(ignore_virtual=True):
            return None
        return [out["logprobs"] for out in outputs]

    def with_logprobs(self, batches: list[MicroBatch], key: str) -> list[MicroBatch]:
        """``batches`` with ``aux[key]`` = this policy's log-probs (last stage; the batches
        unchanged elsewhere, where no loss is computed)."""
        values = self.compute_logprobs(batches)
        if values is None:
            return batches
        return [b.with_aux(key, v) for b, v in zip(batches, values, strict=True)]

    # ---- update ----------------------------------------------------------------------------

    def train_step(self, batches: list[MicroBatch], loss_cfg: GrpoLossConfig, norm) -> dict:
        """One optimizer step over `batches`; returns this rank's summed metric contributions
        (last stage) plus grad norm and learning rate."""

        def loss_func(batch, logits):
            aux = batch.aux
            # The logits' one use (no second pass for the KL below): their gradient can take
            # their memory.
            full_kl = "ref_logprobs" in aux and self.truncates
            logprobs, entropy = self.token_logprobs(
                logits, batch, with_entropy=True, overwrite_logits=not full_kl
            )
            rows = partial(batch.to_rows)
            # Without old log-probs the step is on-policy: the old policy is this one.
            old = aux.get("old_logprobs")
            kl_logprobs = None
            if full_kl:
                # The KL to the reference is between full distributions (see the class doc).
                kl_logprobs = rows(self.token_logprobs(logits, batch, full=True))
            loss, metrics = grpo_loss(
                rows(logprobs),
                rows(old) if old is not None else None,
                rows(aux["advantages"]),
                rows(batch.loss_mask),
                loss_cfg,
                norm,
                ref_logprobs=rows(aux["ref_logprobs"]) if "ref_logprobs" in aux else None,
                rollout_logprobs=rows(aux["rollout_logprobs"]),
                kl_logprobs=kl_logprobs,
                seq_num_tokens=_seq_targets(batch, logits.device),
                seq_sum=_context_parallel_sum if batch.seq_targets is not None else within_row,
            )
            mask = batch.loss_mask.bool()
            # A masked sum, not entropy[mask]: boolean indexing would wait on the device.
            entropy_sum = torch.where(mask, entropy, 0.0).sum()
            metrics["entropy"] = entropy_sum / max(norm.num_tokens, 1)
            if old is None:  # these log-probs are the old policy's: compare with the engine's
                metrics[ROLLOUT_GAP] = max_logprob_gap(logprobs, aux["rollout_logprobs"], mask)
            # Kept on the device: read once, when the step's metrics are reduced.
            metrics = {k: v.detach().float() for k, v in metrics.items()}
            return loss, torch.tensor(1), metrics

        for chunk in self.model:
            chunk.zero_grad_buffer()
        self.optimizer.zero_grad()
        config = get_model_config(self.model[0])
        if moe_loss.has_moe(config):
            dp_cp = parallel_state.get_data_parallel_group(with_context_parallel=True)
            moe_loss.set_aux_loss_scale(config, moe_loss.routed_tokens(batches, dp_cp))
        outputs = self._run(batches, loss_func, forward_only=False)
        update_ok, grad_norm, _ = self.optimizer.step()
        if not update_ok:
            raise FloatingPointError("optimizer step skipped: non-finite gradients")
        self.scheduler.step(increment=1)
        moe = moe_loss.report_aux_losses(config, len(batches)) if moe_loss.has_moe(config) else {}
        return {
            "microbatch_metrics": outputs,
            "moe": moe,
            "grad_norm": float(grad_norm) if grad_norm is not None else float("nan"),
            "lr": self.optimizer.param_groups[0]["lr"],
        }

    # ---- weights ---------------------------------------------------------------------------

    def export_weights(self, bridge, cpu: bool = False) -> Iterator[tuple[str, torch.Tensor]]:
        """Current weights in Hugging Face naming, gathered across TP/PP (collective), one
        tensor at a time on the policy's device (`cpu`: copied to host memory)."""
        yield from bridge.export_hf_weights(self.model, cpu=cpu, show_progress=False)

    def index_export(self, bridge):
        """Where each exported element comes from (`model/export_index.py`; a model-parallel
        group of one rank only)."""
        from oumi_megatron.model.export_index import index_export

        return index_export(bridge, self.model)


def _context_parallel_sum(per_row: torch.Tensor) -> torch.Tensor:
    """A per-sequence partial (detached) summed over the context-parallel ranks, which hold
    parts of the same sequences in the same rows."""
    total = per_row.detach().clone()
    torch.distributed.all_reduce(total, group=parallel_state.get_context_parallel_group())
    return total


def _seq_targets(batch: MicroBatch, device) -> torch.Tensor | None:
    """Whole-sequence loss-token counts of a context-parallel shard (None: not a shard)."""
    if batch.seq_targets is None:
        return None
    return torch.tensor(batch.seq_targets, device=device)

"""torchrun worker: one GRPO update on a fixed batch at several layouts and batchings.

For each case (layout, micro-batch size, packing) it loads the same initial weights, computes
old log-probs, takes one optimizer step and writes the loss metrics plus the exported HF weights
(rank 0), so the test can check the update does not depend on how the batch is split.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from oumi_megatron.algorithms.aggregation import LossNormalizer
from oumi_megatron.algorithms.grpo import GrpoLossConfig
from oumi_megatron.algorithms.rollout_correction import RolloutCorrection
from oumi_megatron.data.context_parallel import shard_for_context_parallel
from oumi_megatron.model.bridge import load_megatron_model
from oumi_megatron.parallel.layout import ParallelLayout
from oumi_megatron.parallel.startup import init_distributed, init_model_parallel
from oumi_megatron.training.metric_reduce import reduce_loss_metrics
from oumi_megatron.training.optimizer import OptimizerSettings, build_optimizer
from oumi_megatron.training.policy import MegatronPolicy
from oumi_megatron.training.step_batches import BatchingSettings, StepSequences, build_microbatches

NUM_SEQUENCES = 8
METRICS = ["loss/policy", "clip_frac", "ratio/mean", "ratio/min", "ratio/max", "entropy",
           "mismatch/token_mult_prob_error"]  # fmt: skip


def fixed_batch() -> StepSequences:
    g = torch.Generator().manual_seed(11)
    prompts, completions, rollout_lp = [], [], []
    for i in range(NUM_SEQUENCES):
        prompts.append(torch.randint(3, 380, (3 + i % 4,), generator=g).tolist())
        completion_len = 2 + (i * 5) % 9  # skewed lengths: packing differs from padding
        completions.append(torch.randint(3, 380, (completion_len,), generator=g).tolist())
        rollout_lp.append((-torch.rand(completion_len, generator=g) * 5).tolist())
    advantages = torch.randn(NUM_SEQUENCES, generator=g).tolist()
    return StepSequences.from_rollouts(prompts, completions, rollout_lp, advantages)


def run_case(case: dict, model_dir: str, out_dir: Path) -> dict:
    from megatron.core import parallel_state
    from megatron.core.distributed import DistributedDataParallelConfig

    layout = ParallelLayout(**case["layout"])
    aggregation = case.get("aggregation", "token-mean")
    init_model_parallel(layout, seed=5)
    loaded = load_megatron_model(
        model_dir,
        out_dir / "megatron_checkpoint",
        layout,
        configure=lambda p: setattr(p, "calculate_per_token_loss", True),
        ddp_config=DistributedDataParallelConfig(
            use_distributed_optimizer=case.get("distopt", False),
            overlap_grad_reduce=case.get("overlap", False),
        ),
    )
    fused_layers = None
    if case.get("fused_wgrad"):
        from oumi_megatron.model import fused_wgrad

        fused_layers = fused_wgrad.install(loaded.chunks)
    if case.get("compiled"):
        from oumi_megatron.model.compile import compile_transformer_layers

        compile_transformer_layers(loaded.chunks)
    settings = OptimizerSettings(learning_rate=1e-3, total_steps=10, adam_eps=1e-6,
                                 use_distributed_optimizer=case.get("distopt", False))  # fmt: skip
    optimizer, scheduler = build_optimizer(loaded.chunks, settings, torch.float32)
    policy = MegatronPolicy(loaded.chunks, 0.8, optimizer, scheduler)
    seqs = fixed_batch()
    batching = BatchingSettings(
        micro_batch_size=case["mbs"],
        dp_size=parallel_state.get_data_parallel_world_size(),
        dp_rank=parallel_state.get_data_parallel_rank(),
        packing=case["packing"],
        token_budget=24,
        microbatch_multiple=layout.pp if layout.vpp else 1,
        fixed_shape=layout.vpp is not None or case.get("fixed", False),
        cp_size=layout.cp,
        sp_size=layout.sp_size,
    )
    batches, _ = build_microbatches(seqs, batching)
    cp_rank = parallel_state.get_context_parallel_rank()
    batches = [shard_for_context_parallel(b, cp_rank, layout.cp) for b in batches]
    if not case.get("on_policy"):  # on-policy: the training forward gives the old log-probs
        batches = policy.with_logprobs(batches, "old_logprobs")
    norm = LossNormalizer.from_global_batch(
        torch.nn.utils.rnn.pad_sequence(seqs.loss_masks, batch_first=True), aggregation
    )
    loss_cfg, names = GrpoLossConfig(loss_aggregation=aggregation), METRICS
    if case.get("loss") == "gspo_sequence_correction":
        correction = RolloutCorrection("sequence", 2.0, "geometric", 0.02, 50.0)
        loss_cfg = GrpoLossConfig(objective="gspo", loss_aggregation=aggregation,
                                  correction=correction)  # fmt: skip
        names = METRICS + ["rollout_correction/weight_mean",
                           "rollout_correction/rejected_seq_frac"]  # fmt: skip
    out = policy.train_step(batches, loss_cfg, norm)
    metrics = reduce_loss_metrics(out["microbatch_metrics"], names)
    save_weights(policy, loaded.bridge, out_dir / f"{case['name']}.safetensors")
    result = {"name": case["name"], "metrics": metrics, "grad_norm": out["grad_norm"]}
    if fused_layers is not None:
        from megatron.core.transformer.transformer_layer import TransformerLayer

        layers = [m for c in loaded.chunks for m in c.modules() if isinstance(m, TransformerLayer)]
        result["fused_layers"], result["transformer_layers"] = fused_layers, len(layers)
    if layout.sequence_parallel:  # norm weights whose gradients are summed over TP
        config = loaded.chunks[0].config
        marked = [
            p
            for c in loaded.chunks
            for p in c.parameters()
            if getattr(p, "sequence_parallel", False)
        ]
        result["sequence_parallel"], result["sp_params"] = config.sequence_parallel, len(marked)
    if case.get("compiled"):
        from torch._dynamo.utils import counters

        result["graph_breaks"] = dict(counters["graph_break"])
    return result


def save_weights(policy, bridge, path: Path) -> None:
    """The policy's weights in HF naming (collective), written by rank 0."""
    weights = dict(policy.export_weights(bridge))
    if dist.get_rank() == 0:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in weights.items()}, path)


def main(run=None) -> None:
    """Run every case of argv[3] with `run(case, model_dir, out_dir)` (default: run_case)."""
    run = run or run_case
    model_dir, out_path, cases_json = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    cases = json.loads(Path(cases_json).read_text())
    init_distributed()
    results = []
    for case in cases:
        results.append(run(case, model_dir, out_path.parent))
        if dist.get_rank() == 0:  # after each case, so a failure later keeps earlier results
            out_path.write_text(json.dumps(results, indent=1))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

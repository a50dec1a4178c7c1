"""torchrun worker: the MoE router's aux losses in a GRPO update, at EP1 and EP2.

For each case (expert-parallel size, micro-batch size, packing) on a tiny MoE model (Qwen3-MoE
unless the case names another fixture: DeepSeek-V3's per-sequence loss with sigmoid scores):

1. Hand computation: every micro-batch of this rank is run forward with the router's own aux
   losses off, the router logits are captured, and the load-balancing loss (Switch over the
   micro-batch, or its mean over the micro-batch's rows for ``seq_aux_loss``) and the z-loss
   are computed from them by their formulas, weighted by the micro-batch's share of the
   step's routed tokens; back-propagated and reduced over data-parallel ranks.
2. The trainer's path: `MegatronPolicy.train_step` with zero advantages (the policy loss has
   zero gradient), so its gradients are the aux terms alone.
3. A GRPO step with random advantages; its loss, gradient norm and exported weights.

Rank 0 writes the largest gradient difference of 1 vs 2, the logged aux loss next to the
hand one, and the step's results, so the test can check them and compare EP1 with EP2.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist
from update_worker import fixed_batch, save_weights
from update_worker import main as run_cases

from oumi_megatron.algorithms.aggregation import LossNormalizer
from oumi_megatron.algorithms.grpo import GrpoLossConfig
from oumi_megatron.model.bridge import load_megatron_model
from oumi_megatron.model.provider import needs_equal_microbatch_shapes
from oumi_megatron.parallel.layout import ParallelLayout
from oumi_megatron.parallel.startup import init_model_parallel
from oumi_megatron.training.metric_reduce import reduce_loss_metrics
from oumi_megatron.training.optimizer import OptimizerSettings, build_optimizer
from oumi_megatron.training.policy import MegatronPolicy
from oumi_megatron.training.step_batches import BatchingSettings, build_microbatches

AUX_COEFF, Z_COEFF = 0.1, 0.01


def _switch_balance(logits: torch.Tensor, topk: int, score: str) -> torch.Tensor:
    """Switch load balancing over `logits`' tokens, E · Σ_e f_e · P_e: f_e the fraction of the
    tokens' top-k picks that go to e, P_e the mean score of e (softmax, or sigmoid normalised
    over the experts)."""
    tokens, experts = logits.shape
    if score == "softmax":
        probs = torch.softmax(logits, dim=-1)
    else:
        probs = torch.sigmoid(logits)
        probs = probs / probs.sum(-1, keepdim=True)
    chosen = torch.zeros_like(probs).scatter(1, probs.topk(topk, dim=-1).indices, 1.0)
    fraction = chosen.sum(0) / (tokens * topk)
    return experts * (fraction * probs.mean(0)).sum()


def _hand_aux_terms(logits: torch.Tensor, config) -> tuple[torch.Tensor, torch.Tensor]:
    """The load-balancing loss and the z-loss, mean_t logsumexp(l_t)², of one micro-batch's
    router logits [s, b, E]: Switch over all its tokens (``aux_loss``) or per row, averaged
    over the rows (``seq_aux_loss``: a padded row is one sequence, a packed row too)."""
    logits = logits.float()
    topk, score = config.moe_router_topk, config.moe_router_score_function
    if config.moe_router_load_balancing_type == "seq_aux_loss":
        rows = logits.reshape(logits.shape[0], -1, logits.shape[-1]).unbind(1)
        balance = torch.stack([_switch_balance(row, topk, score) for row in rows]).mean()
    else:
        balance = _switch_balance(logits.reshape(-1, logits.shape[-1]), topk, score)
    z = torch.logsumexp(logits.reshape(-1, logits.shape[-1]), dim=-1).square().mean()
    return balance, z


def _routers(chunks):
    from megatron.core.transformer.moe.router import TopKRouter

    return [m for chunk in chunks for m in chunk.modules() if isinstance(m, TopKRouter)]


def hand_gradients(policy, batches, config) -> tuple[dict[str, torch.Tensor], float]:
    """Gradients of coeff · Σ_i (n_i / N) (balance_i + z_i) over this step's micro-batches of
    every data-parallel rank, and the mean balance loss per layer and micro-batch (DP-mean)."""
    from megatron.core import parallel_state
    from megatron.core.distributed import finalize_model_grads

    from oumi_megatron.training.moe_loss import routed_tokens

    total = routed_tokens(
        batches, parallel_state.get_data_parallel_group(with_context_parallel=True)
    )
    captured: list[torch.Tensor] = []
    for router in _routers(policy.model):
        gating = router.gating
        router.gating = lambda x, _g=gating: captured.append(_g(x)) or captured[-1]
    config.moe_aux_loss_coeff, config.moe_z_loss_coeff = 0.0, None  # the router's own: off
    for chunk in policy.model:
        chunk.zero_grad_buffer()
        chunk.train(True)
    balance_sum = 0.0
    for batch in batches:
        captured.clear()
        policy._forward(policy.model[0], batch.to(policy.device))
        terms = [_hand_aux_terms(logits, config) for logits in captured]
        weight = batch.input_ids.numel() / total
        loss = sum(AUX_COEFF * b + Z_COEFF * z for b, z in terms) * weight
        loss.backward()
        balance_sum += sum(b.item() for b, _ in terms) / len(terms)
    finalize_model_grads(policy.model, num_tokens=None)
    config.moe_aux_loss_coeff, config.moe_z_loss_coeff = AUX_COEFF, Z_COEFF
    for router in _routers(policy.model):
        del router.gating  # back to the class's method
    mean = torch.tensor([balance_sum / len(batches)], dtype=torch.float64)
    dist.all_reduce(mean, group=parallel_state.get_data_parallel_group())
    mean /= parallel_state.get_data_parallel_world_size()
    return _main_grads(policy), mean.item()


def _main_grads(policy) -> dict[str, torch.Tensor]:
    return {
        name: param.main_grad.detach().clone()
        for chunk in policy.model
        for name, param in chunk.named_parameters()
    }


def run_case(case: dict, model_dir: str, out_dir: Path) -> dict:
    from megatron.core import parallel_state
    from megatron.core.distributed import DistributedDataParallelConfig
    from megatron.core.utils import get_model_config

    def configure(provider):
        provider.calculate_per_token_loss = True
        provider.moe_aux_loss_coeff, provider.moe_z_loss_coeff = AUX_COEFF, Z_COEFF
        # DeepSeek's expert bias moves at every gradient finalize and with it the routing of
        # the next forward: held still, so the hand and the trainer's passes route alike.
        provider.moe_router_bias_update_rate = 0.0

    from oumi_megatron.training.moe_loss import tracked_names

    model_dir = str(Path(model_dir).parent / case.get("arch", Path(model_dir).name))
    layout = ParallelLayout(**case["layout"])
    init_model_parallel(layout, seed=5)
    loaded = load_megatron_model(
        model_dir,
        out_dir / f"megatron_checkpoint_{case['name']}",
        layout,
        configure=configure,
        ddp_config=DistributedDataParallelConfig(),
    )
    if case.get("fused_wgrad"):
        from oumi_megatron.model import fused_wgrad

        fused_wgrad.install(loaded.chunks)
        fused = [
            m for c in loaded.chunks for m in c.modules() if getattr(m, "_oumi_fused_wgrad", 0)
        ]
        assert any(m.is_expert for m in fused) and not all(m.is_expert for m in fused)
    if case.get("compiled"):
        from oumi_megatron.model.compile import compile_transformer_layers

        compile_transformer_layers(loaded.chunks)
    settings = OptimizerSettings(learning_rate=1e-3, total_steps=10, adam_eps=1e-6, clip_grad=1e9)
    optimizer, scheduler = build_optimizer(loaded.chunks, settings, torch.float32)
    policy = MegatronPolicy(loaded.chunks, 0.8, optimizer, scheduler)
    config = get_model_config(loaded.chunks[0])
    batching = BatchingSettings(
        micro_batch_size=case["mbs"],
        dp_size=parallel_state.get_data_parallel_world_size(),
        dp_rank=parallel_state.get_data_parallel_rank(),
        packing=case["packing"],
        token_budget=24,
        # Every rank holds the whole step here, so local shapes agree across ranks.
        fixed_shape=case.get("fixed", False) or needs_equal_microbatch_shapes(layout),
        sp_size=layout.sp_size,
    )
    seqs = fixed_batch()  # no old log-probs: on-policy, the ratio is 1
    norm = LossNormalizer.from_global_batch(
        torch.nn.utils.rnn.pad_sequence(seqs.loss_masks, batch_first=True), "token-mean"
    )
    loss_cfg = GrpoLossConfig()

    zero = seqs.with_aux("advantages", [torch.zeros(()) for _ in range(len(seqs))])
    batches, _ = build_microbatches(zero, batching)
    hand, hand_balance = hand_gradients(policy, batches, config)
    # lr 0 for this step: the weights stay where the hand computation took them.
    for group in optimizer.param_groups:
        group["lr"], group["max_lr"], group["min_lr"] = 0.0, 0.0, 0.0
    out = policy.train_step(batches, loss_cfg, norm)
    trainer = _main_grads(policy)
    worst = max((hand[k] - trainer[k]).abs().max().item() for k in hand)
    largest = max(v.abs().max().item() for v in hand.values())
    worst_t = torch.tensor([worst, largest], dtype=torch.float64)
    dist.all_reduce(worst_t, op=dist.ReduceOp.MAX)

    optimizer, scheduler = build_optimizer(loaded.chunks, settings, torch.float32)
    policy = MegatronPolicy(loaded.chunks, 0.8, optimizer, scheduler)
    batches, _ = build_microbatches(seqs, batching)
    step = policy.train_step(batches, loss_cfg, norm)
    metrics = reduce_loss_metrics(step["microbatch_metrics"], ["loss/policy", "ratio/mean"])
    save_weights(policy, loaded.bridge, out_dir / f"{case['name']}.safetensors")
    return {
        "name": case["name"],
        "aux_grad_max_abs_diff": worst_t[0].item(),
        "aux_grad_max_abs": worst_t[1].item(),
        "balancing": config.moe_router_load_balancing_type,
        "logged_balance_loss": out["moe"].get(f"moe/{tracked_names(config)[0]}"),
        "logged_z_loss": out["moe"].get("moe/z_loss"),
        "hand_balance_loss": hand_balance,
        "metrics": metrics,
        "grad_norm": step["grad_norm"],
    }


if __name__ == "__main__":
    run_cases(run_case)

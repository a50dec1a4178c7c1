"""The MoE router's auxiliary losses (load balancing, z-loss) under our loss normalisation.

With `calculate_per_token_loss`, Megatron's router multiplies each micro-batch's aux loss by
its local token count (× the TP·CP group size) and expects `finalize_model_grads` to divide
every gradient by the step's global token count. Our losses are already normalised by global
counts, so the finalize hook does not divide (training/policy.py); left alone, the aux term
would act ~global-token-count times too strongly. Instead, Megatron's `moe_grad_scale_func`
hands the router the missing divisor, for the aux terms only:

    aux gradient = coeff · Σ_i (n_i / N) · ∇ aux_i

over the micro-batches i of every data-parallel rank, n_i the tokens of micro-batch i
(padding included: the router sees it) and N = Σ n_i — the token-weighted mean Megatron's own
per-token-loss training gives, independent of the policy loss's normaliser.

The router multiplies by its local token count × the TP·CP group size; each rank's aux loss is
its tokens' share of the whole (expert counts are reduced over the TP·CP group) and the shares
add up in the gradient reduction, so the divisor that leaves n_i / N is N itself: the tokens of
the step's micro-batches, counted once.
"""

from __future__ import annotations

import torch

# Megatron's tracker names, by `moe_router_load_balancing_type`.
_BALANCING_NAMES = {
    "aux_loss": "load_balancing_loss",
    "seq_aux_loss": "seq_load_balancing_loss",
    "global_aux_loss": "global_load_balancing_loss",
}


def has_moe(config) -> bool:
    return bool(getattr(config, "num_moe_experts", None))


def tracked_names(config) -> list[str]:
    """The aux losses this model's routers record (Megatron's tracker names)."""
    kinds = config.moe_router_load_balancing_type
    kinds = kinds if isinstance(kinds, list) else [kinds]
    coeffs = config.moe_aux_loss_coeff
    coeffs = coeffs if isinstance(coeffs, list) else [coeffs] * len(kinds)
    names = [_BALANCING_NAMES[k] for k, c in zip(kinds, coeffs, strict=True) if c]
    if config.moe_z_loss_coeff:
        names.append("z_loss")
    return names


def routed_tokens(batches, dp_cp_group) -> int:
    """Tokens of this optimizer step's micro-batches, counted once: this rank's (its context-
    parallel share) summed over the data- and context-parallel ranks."""
    from oumi_megatron.parallel.ranks import all_reduce_host

    local = sum(b.input_ids.numel() for b in batches)
    total = torch.tensor([float(local)], dtype=torch.float64)
    return int(all_reduce_host(total, group=dp_cp_group).item())


def set_aux_loss_scale(config, num_tokens: int) -> None:
    """Make the router's aux-loss gradients the token-weighted mean over the step's
    micro-batches (module doc): divide by the step's tokens."""
    divisor = float(max(num_tokens, 1))
    grad_scale = config.grad_scale_func  # mixed-precision loss scaling, when on

    def scale() -> torch.Tensor:
        base = grad_scale(torch.ones(1)) if grad_scale is not None else torch.ones(1)
        return base / divisor

    config.moe_grad_scale_func = scale


def report_aux_losses(config, num_microbatches: int) -> dict[str, float]:
    """Each aux loss (without its coefficient), averaged over MoE layers and this step's
    micro-batches and over data-parallel ranks; the tracker is cleared. Collective over
    pipeline and data-parallel ranks (stages without MoE layers contribute zeros)."""
    from megatron.core.transformer.moe.moe_logging import get_moe_metrics_tracker

    names = tracked_names(config)
    if not names or num_microbatches == 0:
        return {}
    totals: dict[str, torch.Tensor] = {}
    get_moe_metrics_tracker().report(
        loss_scale=1.0 / num_microbatches,
        iteration=0,
        force_initialize=True,
        track_names=names,
        num_layers=config.num_layers,
        moe_layer_freq=config.moe_layer_freq,
        total_loss_dict=totals,
    )
    return {f"moe/{name}": float(value) for name, value in totals.items()}

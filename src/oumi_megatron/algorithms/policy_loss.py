"""Per-token clipped surrogate and rollout/trainer mismatch correction (pure torch)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Bound on |logp - old_logp| before exp(): keeps the ratio and its gradient finite in fp32
# (exp(88) overflows). Only pathological tokens ever hit it.
LOG_RATIO_CLAMP = 20.0


@dataclass(frozen=True)
class SurrogateOutput:
    """Per-token outputs of :func:`clipped_surrogate`, all [B, T].

    Attributes:
        loss: ``-min(ratio * A, clip(ratio, 1 - eps_low, 1 + eps_high) * A)``.
        ratio: ``exp(logp - old_logp)`` (carries gradient).
        clipped_low: A < 0 and ratio < 1 - eps_low (clipped branch active, zero gradient).
        clipped_high: A > 0 and ratio > 1 + eps_high (clipped branch active, zero gradient).
    """

    loss: torch.Tensor
    ratio: torch.Tensor
    clipped_low: torch.Tensor
    clipped_high: torch.Tensor

    @property
    def clipped(self) -> torch.Tensor:
        """Tokens where the clipped branch is active (either side)."""
        return self.clipped_low | self.clipped_high


def clipped_surrogate(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
) -> SurrogateOutput:
    """PPO/GRPO clipped surrogate per token.

    Args:
        logprobs: [B, T] log-probs of the sampled tokens under the current policy.
        old_logprobs: [B, T] log-probs under the policy that generated the batch (detached).
        advantages: [B] per sequence (broadcast over tokens) or [B, T].
        epsilon: lower clip range eps_low.
        epsilon_high: upper clip range; defaults to ``epsilon``. Larger = DAPO clip-higher.
    """
    eps_low = epsilon
    eps_high = epsilon if epsilon_high is None else epsilon_high
    if advantages.dim() == logprobs.dim() - 1:
        advantages = advantages.unsqueeze(-1)
    advantages = advantages.detach()
    log_ratio = (logprobs - old_logprobs.detach()).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    ratio = torch.exp(log_ratio)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high) * advantages
    loss = -torch.minimum(unclipped, clipped)
    # Strict inequalities: at the boundary both branches coincide and the gradient is kept.
    ratio_d = ratio.detach()
    clipped_low = (ratio_d < 1.0 - eps_low) & (advantages < 0)
    clipped_high = (ratio_d > 1.0 + eps_high) & (advantages > 0)
    return SurrogateOutput(
        loss=loss, ratio=ratio, clipped_low=clipped_low, clipped_high=clipped_high
    )


def truncated_is_weight(
    old_logprobs: torch.Tensor, rollout_logprobs: torch.Tensor, cap: float
) -> torch.Tensor:
    """Truncated importance weight ``min(exp(old_logp_trainer - logp_rollout), cap)``.

    Corrects for the rollout engine (e.g. vLLM) sampling from a slightly different
    distribution than the trainer computes (Yao et al., "Your Efficient RL Framework
    Secretly Brings You Off-Policy RL Training"; verl's TIS). Detached: it only reweights.
    """
    if cap <= 0:
        raise ValueError(f"TIS cap must be > 0, got {cap}")
    log_w = (old_logprobs.detach() - rollout_logprobs.detach()).clamp(max=LOG_RATIO_CLAMP)
    return torch.exp(log_w).clamp(max=cap)


def token_mult_prob_error(
    trainer_logp: torch.Tensor, rollout_logp: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Masked mean of ``exp(|trainer_logp - rollout_logp|)`` (1.0 = perfect agreement).

    Returns 0 for an empty mask (nothing measured).
    """
    m = mask.bool()
    err = torch.exp((trainer_logp.detach() - rollout_logp.detach()).abs())
    err = torch.where(m, err, torch.zeros((), dtype=err.dtype, device=err.device))
    return err.sum() / m.sum().clamp(min=1)

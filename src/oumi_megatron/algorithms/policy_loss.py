"""Per-token policy objectives of the loss family (pure torch).

Each objective turns the current log-probs ``logp`` (with gradient), the behaviour policy's
``old`` (detached) and the advantages ``A`` into a per-token loss to minimise. The ratio is
``r = exp(clamp(logp - old, -20, 20))`` (verl's clamp).

* ``clip`` -- PPO/GRPO clipped surrogate (Schulman et al. 2017, arXiv:1707.06347; Shao et al.
  2024, arXiv:2402.03300) with decoupled ranges (DAPO clip-higher, Yu et al. 2025,
  arXiv:2503.14476): ``-min(r A, clip(r, 1 - eps_low, 1 + eps_high) A)``; with dual-clip
  (Ye et al. 2020, arXiv:1912.09729), for ``A < 0`` the loss is also capped at ``-c A``.
* ``gspo`` -- GSPO (Zheng et al. 2025, arXiv:2507.18071): the same clip on the sequence ratio
  ``s_i = exp(mean_t(logp - old))``, in the token form ``s_it = sg[s_i] * pi_t / sg[pi_t]``
  (value ``s_i``, gradient ``s_i * grad logp_t``; log clamped at 10 as verl does). With a
  sequence-level advantage and a per-sequence token mean this is GSPO's exact gradient.
* ``cispo`` -- CISPO (MiniMax-M1, arXiv:2506.13585): ``-sg(clip(r, 1 - eps_low, 1 + eps_high))
  * A * logp``: the clip bounds the weight, and every token keeps its gradient.
* ``sapo`` -- SAPO (Gao et al. 2025, arXiv:2511.20347): ``-f(r) A`` with the soft gate
  ``f(r) = 4 / tau * sigmoid(tau (r - 1))`` (``tau_pos`` for A > 0, ``tau_neg`` otherwise):
  ratio 1 gives PPO's gradient, which then decays smoothly instead of being cut.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

PolicyObjective = Literal["clip", "gspo", "cispo", "sapo"]
POLICY_OBJECTIVES: tuple[str, ...] = ("clip", "gspo", "cispo", "sapo")

# Bound on |logp - old| before exp(): keeps the ratio and its gradient finite in fp32
# (exp(88) overflows). Only pathological tokens ever hit it. verl's value.
LOG_RATIO_CLAMP = 20.0
# verl's upper bound on GSPO's log sequence ratio.
GSPO_LOG_RATIO_MAX = 10.0


@dataclass(frozen=True)
class ObjectiveParams:
    """Hyper-parameters of the objectives.

    Attributes:
        epsilon: lower clip range eps_low (clip, gspo, cispo).
        epsilon_high: upper clip range; None = ``epsilon`` (DAPO clip-higher when larger).
        clip_ratio_c: dual-clip constant c > 1 for ``clip``; None disables.
        tau_pos: SAPO gate temperature for positive advantages.
        tau_neg: SAPO gate temperature for zero or negative advantages.
    """

    epsilon: float = 0.2
    epsilon_high: float | None = None
    clip_ratio_c: float | None = None
    tau_pos: float = 1.0
    tau_neg: float = 1.05

    @property
    def eps_high(self) -> float:
        return self.epsilon if self.epsilon_high is None else self.epsilon_high


@dataclass(frozen=True)
class PolicyTerms:
    """Per-token outputs of :func:`policy_objective`, all [B, T].

    Attributes:
        loss: the per-token loss (carries gradient).
        ratio: the importance ratio the objective used (detached): per token, or the
            sequence ratio broadcast over its tokens (gspo).
        clipped_low: the lower clip stopped the gradient (clip, gspo: A < 0 and
            r < 1 - eps_low) or bounded the weight (cispo: r < 1 - eps_low).
        clipped_high: the same for the upper bound (A > 0 and r > 1 + eps_high; cispo: any A).
        dual_clipped: A < 0 and the dual-clip cap is active (zero gradient).
    """

    loss: torch.Tensor
    ratio: torch.Tensor
    clipped_low: torch.Tensor
    clipped_high: torch.Tensor
    dual_clipped: torch.Tensor

    @property
    def clipped(self) -> torch.Tensor:
        return self.clipped_low | self.clipped_high | self.dual_clipped


def token_log_ratio(logprobs: torch.Tensor, old_logprobs: torch.Tensor) -> torch.Tensor:
    """``clamp(logp - sg(old), -20, 20)``."""
    return (logprobs - old_logprobs.detach()).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)


def policy_objective(
    objective: PolicyObjective,
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    params: ObjectiveParams,
    seq_log_ratio: torch.Tensor | None = None,
) -> PolicyTerms:
    """Per-token loss of ``objective`` (see the module doc).

    Args:
        logprobs: [B, T] current log-probs of the sampled tokens (with gradient).
        old_logprobs: [B, T] behaviour-policy log-probs (detached).
        advantages: [B] per sequence (broadcast over tokens) or [B, T].
        seq_log_ratio: [B] (or [B, 1]) each sequence's mean of ``logp - old`` over its
            tokens, detached; required by ``gspo``.
    """
    if advantages.dim() == logprobs.dim() - 1:
        advantages = advantages.unsqueeze(-1)
    adv = advantages.detach().expand_as(logprobs)
    if objective == "gspo":
        if seq_log_ratio is None:
            raise ValueError("gspo needs the sequences' mean log-ratio (seq_log_ratio)")
        seq = seq_log_ratio.detach().reshape(-1, 1)
        log_ratio = (logprobs - logprobs.detach() + seq).clamp(max=GSPO_LOG_RATIO_MAX)
    else:
        log_ratio = token_log_ratio(logprobs, old_logprobs)
    ratio = torch.exp(log_ratio)
    ratio_d = ratio.detach()
    low, high = 1.0 - params.epsilon, 1.0 + params.eps_high
    no = torch.zeros_like(ratio_d, dtype=torch.bool)
    if objective in ("clip", "gspo"):
        loss = -torch.minimum(ratio * adv, ratio.clamp(low, high) * adv)
        # Strict inequalities: at the boundary both branches coincide and the gradient is kept.
        clipped_low = (ratio_d < low) & (adv < 0)
        clipped_high = (ratio_d > high) & (adv > 0)
        dual = no
        if objective == "clip" and params.clip_ratio_c is not None:
            cap = -adv * params.clip_ratio_c
            dual = (adv < 0) & (loss.detach() > cap)
            loss = torch.where(dual, cap, loss)
        return PolicyTerms(loss, ratio_d, clipped_low, clipped_high, dual)
    if objective == "cispo":
        weight = ratio_d.clamp(low, high)
        loss = -weight * adv * logprobs
        return PolicyTerms(loss, ratio_d, ratio_d < low, ratio_d > high, no)
    if objective == "sapo":
        tau = torch.where(adv > 0, params.tau_pos, params.tau_neg).to(ratio.dtype)
        gate = torch.sigmoid(tau * (ratio - 1.0)) * (4.0 / tau)
        return PolicyTerms(-gate * adv, ratio_d, no, no, no)
    raise ValueError(f"unknown policy objective {objective!r}; expected {POLICY_OBJECTIVES}")


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

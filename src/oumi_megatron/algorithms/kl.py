"""Per-token KL estimators between the policy and a frozen reference (pure torch)."""

from __future__ import annotations

from typing import Literal

import torch

KLEstimator = Literal["k1", "k2", "k3"]
KL_ESTIMATORS: tuple[str, ...] = ("k1", "k2", "k3")

# exp() of a larger log-ratio overflows fp32 in k3; such tokens are pathological anyway.
KL_LOG_RATIO_CLAMP = 20.0


def kl_penalty(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: KLEstimator = "k3"
) -> torch.Tensor:
    """Per-token estimate of KL(pi || pi_ref) from samples of pi (Schulman's k1/k2/k3).

    With ``d = logprobs - ref_logprobs``:
      * k1 = d                      (unbiased, high variance, can be negative)
      * k2 = 0.5 * d**2             (biased, low variance, >= 0)
      * k3 = exp(-d) + d - 1        (unbiased, low variance, >= 0; used by GRPO/TRL)

    Gradients flow into ``logprobs`` only; ``ref_logprobs`` is treated as constant.
    """
    d = logprobs - ref_logprobs.detach()
    if estimator == "k1":
        return d
    if estimator == "k2":
        return 0.5 * d.square()
    if estimator == "k3":
        neg_d = (-d).clamp(-KL_LOG_RATIO_CLAMP, KL_LOG_RATIO_CLAMP)
        return torch.exp(neg_d) - neg_d - 1.0
    raise ValueError(f"unknown KL estimator {estimator!r}; expected one of {KL_ESTIMATORS}")

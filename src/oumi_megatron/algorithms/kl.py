"""Per-token KL estimators between the policy and a frozen reference (pure torch).

Defined exactly as verl's ``kl_penalty`` (``verl/trainer/ppo/core_algos.py``), with its names
accepted as aliases (``kl`` = k1, ``mse`` = k2, ``low_var_kl`` = k3).
"""

from __future__ import annotations

from typing import Literal

import torch

KLEstimator = Literal["k1", "k2", "k3", "abs", "k1+", "k3+", "abs+"]
KL_ESTIMATORS: tuple[str, ...] = ("k1", "k2", "k3", "abs", "k1+", "k3+", "abs+")
# verl's names for the same estimators (a trailing "+" carries over).
KL_ALIASES = {"kl": "k1", "mse": "k2", "low_var_kl": "k3"}

# exp() of a larger log-ratio overflows fp32 in k3; verl clamps the log-ratio here ...
KL_LOG_RATIO_CLAMP = 20.0
# ... and the k3 value here (so a token's KL gradient vanishes beyond it).
KL_VALUE_CLAMP = 10.0


def canonical_kl_estimator(name: str) -> str:
    """``name`` with verl's aliases resolved (``low_var_kl+`` -> ``k3+``); unknown names unchanged."""
    base, plus = (name[:-1], "+") if name.endswith("+") else (name, "")
    resolved = KL_ALIASES.get(base, base) + plus
    return "k2" if resolved == "k2+" else resolved  # k2's gradient is already k2's


def _forward(d: torch.Tensor, estimator: str) -> torch.Tensor:
    if estimator == "k1":
        return d
    if estimator == "abs":
        return d.abs()
    if estimator == "k2":
        return 0.5 * d.square()
    if estimator == "k3":
        neg_d = (-d).clamp(-KL_LOG_RATIO_CLAMP, KL_LOG_RATIO_CLAMP)
        return (torch.exp(neg_d) - neg_d - 1.0).clamp(-KL_VALUE_CLAMP, KL_VALUE_CLAMP)
    raise ValueError(f"unknown KL estimator {estimator!r}; expected one of {KL_ESTIMATORS}")


def kl_penalty(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: KLEstimator = "k3"
) -> torch.Tensor:
    """Per-token estimate of KL(pi || pi_ref) from samples of pi (Schulman's k1/k2/k3).

    With ``d = logprobs - ref_logprobs``:
      * k1 = d                              (unbiased, high variance, can be negative)
      * abs = |d|
      * k2 = 0.5 * d**2                     (biased, low variance, >= 0)
      * k3 = clamp(exp(-d) + d - 1, max=10) (unbiased, low variance, >= 0; GRPO's), with
        ``-d`` clamped to [-20, 20] before exp(), as verl does.
      * ``k1+``, ``k3+``, ``abs+``: straight-through: the value of k1 / k3 / abs, the gradient
        of k2 (``d * grad logprobs``, the unbiased gradient of KL(pi || pi_ref) on-policy).

    Gradients flow into ``logprobs`` only; ``ref_logprobs`` is treated as constant.
    """
    estimator = canonical_kl_estimator(estimator)
    d = logprobs - ref_logprobs.detach()
    if not estimator.endswith("+"):
        return _forward(d, estimator)
    value = _forward(d.detach(), estimator[:-1])
    surrogate = 0.5 * d.square()
    return surrogate - surrogate.detach() + value

"""KL estimators k1/k2/k3/abs and straight-through variants: hand values, gradients, clamps."""

import math

import pytest
import torch

from oumi_megatron.algorithms import KLEstimator, kl_penalty

LN2 = math.log(2.0)
# d = logp - ref = [0, -ln2, ln2]
LOGP = torch.log(torch.tensor([0.5, 0.25, 0.5]))
REF = torch.log(torch.tensor([0.5, 0.5, 0.25]))


@pytest.mark.parametrize(
    ("estimator", "expected", "grad"),
    [
        # k1 = d; dk1/dlogp = 1
        ("k1", [0.0, -0.6931472, 0.6931472], [1.0, 1.0, 1.0]),
        # k2 = d^2 / 2 = [0, 0.2402265, 0.2402265]; dk2/dlogp = d
        ("k2", [0.0, 0.2402265, 0.2402265], [0.0, -0.6931472, 0.6931472]),
        # k3 = exp(ref - logp) - (ref - logp) - 1 with ref - logp = [0, ln2, -ln2]:
        # [1 - 0 - 1, 2 - ln2 - 1, 0.5 + ln2 - 1]; dk3/dlogp = 1 - exp(ref - logp) = [0, -1, 0.5]
        ("k3", [0.0, 0.3068528, 0.1931472], [0.0, -1.0, 0.5]),
        # abs = |d|; gradient sign(d) (0 at d = 0, torch's convention)
        ("abs", [0.0, 0.6931472, 0.6931472], [0.0, -1.0, 1.0]),
        # straight-through: the value of the named estimator, the gradient of k2 (= d)
        ("k1+", [0.0, -0.6931472, 0.6931472], [0.0, -0.6931472, 0.6931472]),
        ("k3+", [0.0, 0.3068528, 0.1931472], [0.0, -0.6931472, 0.6931472]),
        ("abs+", [0.0, 0.6931472, 0.6931472], [0.0, -0.6931472, 0.6931472]),
        # verl's names
        ("low_var_kl", [0.0, 0.3068528, 0.1931472], [0.0, -1.0, 0.5]),
        ("low_var_kl+", [0.0, 0.3068528, 0.1931472], [0.0, -0.6931472, 0.6931472]),
        ("kl", [0.0, -0.6931472, 0.6931472], [1.0, 1.0, 1.0]),
        ("mse", [0.0, 0.2402265, 0.2402265], [0.0, -0.6931472, 0.6931472]),
    ],
)
def test_values_and_gradients(
    estimator: KLEstimator, expected: list[float], grad: list[float]
) -> None:
    logp = LOGP.clone().requires_grad_(True)
    ref = REF.clone().requires_grad_(True)
    kl = kl_penalty(logp, ref, estimator)
    torch.testing.assert_close(kl, torch.tensor(expected))
    kl.sum().backward()
    torch.testing.assert_close(logp.grad, torch.tensor(grad))
    assert ref.grad is None  # reference is frozen


def test_k1_and_k3_are_unbiased_under_the_policy() -> None:
    # Exact expectation over a 3-token vocabulary: E_pi[k] must equal KL(pi || ref).
    pi = torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64)
    ref = torch.tensor([0.25, 0.25, 0.5], dtype=torch.float64)
    true_kl = (pi * (pi / ref).log()).sum()  # 0.5 ln2 - 0.25 ln2 = 0.25 ln2
    torch.testing.assert_close(true_kl, torch.tensor(0.25 * LN2, dtype=torch.float64))
    unbiased: tuple[KLEstimator, ...] = ("k1", "k3")
    for est in unbiased:
        e = (pi * kl_penalty(pi.log(), ref.log(), est)).sum()
        torch.testing.assert_close(e, true_kl)
    # k2 is biased here: E = 0.5 * (0.5 ln2^2 + 0.25 ln2^2) = 0.375 ln2^2 != 0.25 ln2.
    e2 = (pi * kl_penalty(pi.log(), ref.log(), "k2")).sum()
    torch.testing.assert_close(e2, torch.tensor(0.375 * LN2**2, dtype=torch.float64))


def test_k2_k3_non_negative_and_agree_to_second_order() -> None:
    g = torch.Generator().manual_seed(0)
    logp = -torch.rand(64, generator=g) * 5
    ref = -torch.rand(64, generator=g) * 5
    assert (kl_penalty(logp, ref, "k2") >= 0).all()
    assert (kl_penalty(logp, ref, "k3") >= -1e-7).all()
    small = ref + 1e-2 * torch.randn(64, generator=g, dtype=torch.float64).float()
    torch.testing.assert_close(
        kl_penalty(small, ref, "k3"), kl_penalty(small, ref, "k2"), atol=1e-6, rtol=0.05
    )


def test_k3_stays_finite_for_extreme_log_ratios() -> None:
    # exp(100) overflows fp32; the log-ratio clamp keeps the value and gradient finite.
    logp = torch.tensor([-100.0], requires_grad=True)
    kl = kl_penalty(logp, torch.tensor([0.0]), "k3")
    kl.backward()
    assert torch.isfinite(kl).all() and torch.isfinite(logp.grad).all()


def test_k3_value_clamped_at_ten_as_verl() -> None:
    # ref - logp = 3: exp(3) - 3 - 1 = 16.0855 > 10 -> 10, and the clamp stops the gradient;
    # ref - logp = 2: exp(2) - 2 - 1 = 4.3891 stays, gradient 1 - exp(2).
    logp = torch.tensor([-3.0, -2.0], requires_grad=True)
    kl = kl_penalty(logp, torch.zeros(2), "k3")
    torch.testing.assert_close(kl, torch.tensor([10.0, math.exp(2) - 3.0]))
    kl.sum().backward()
    torch.testing.assert_close(logp.grad, torch.tensor([0.0, 1.0 - math.exp(2)]))
    # The straight-through variant keeps k2's gradient (d = -3) under the value clamp.
    logp2 = torch.tensor([-3.0], requires_grad=True)
    st = kl_penalty(logp2, torch.zeros(1), "k3+")
    st.backward()
    torch.testing.assert_close(st.detach(), torch.tensor([10.0]))
    torch.testing.assert_close(logp2.grad, torch.tensor([-3.0]))


def test_unknown_estimator_raises() -> None:
    with pytest.raises(ValueError):
        kl_penalty(LOGP, REF, "k4")  # type: ignore[arg-type]

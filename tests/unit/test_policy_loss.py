"""Policy objectives (clip + dual-clip, GSPO, CISPO, SAPO): hand values and gradients."""

import math

import pytest
import torch

from oumi_megatron.algorithms import (
    ObjectiveParams,
    policy_objective,
    token_mult_prob_error,
)

LN = math.log


def clipped_surrogate(logp, old, adv, epsilon=0.2, epsilon_high=None):
    params = ObjectiveParams(epsilon=epsilon, epsilon_high=epsilon_high)
    return policy_objective("clip", logp, old, adv, params)


# ---------------------------------------------------------------- clipped surrogate


def test_surrogate_hand_values_both_sides_both_signs() -> None:
    # One token per sequence; advantages per sequence [B] broadcast over T=1; old_logp = 0.
    ratio = torch.tensor([[1.5], [0.5], [0.5], [1.5], [1.1], [2.0]])
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0, 2.0, 0.0])
    logp = ratio.log().requires_grad_(True)
    out = clipped_surrogate(logp, torch.zeros_like(logp), adv, epsilon=0.2)
    # -min(r A, clip(r, 0.8, 1.2) A):
    #   r=1.5 A=+1: -min(1.5, 1.2) = -1.2  clipped high
    #   r=0.5 A=+1: -min(0.5, 0.8) = -0.5
    #   r=0.5 A=-1: -min(-0.5, -0.8) = 0.8  clipped low
    #   r=1.5 A=-1: -min(-1.5, -1.2) = 1.5
    #   r=1.1 A=+2: -min(2.2, 2.2) = -2.2
    #   r=2.0 A= 0: 0, not clipped
    torch.testing.assert_close(
        out.loss, torch.tensor([[-1.2], [-0.5], [0.8], [1.5], [-2.2], [0.0]])
    )
    assert out.clipped_high.squeeze(1).tolist() == [True, False, False, False, False, False]
    assert out.clipped_low.squeeze(1).tolist() == [False, False, True, False, False, False]
    assert out.clipped.squeeze(1).tolist() == [True, False, True, False, False, False]
    out.loss.sum().backward()
    # d/dlogp of -r A is -A r on the unclipped branch, 0 where the clipped branch is active.
    torch.testing.assert_close(
        logp.grad, torch.tensor([[0.0], [-0.5], [0.0], [1.5], [-2.2], [0.0]])
    )


def test_surrogate_clip_higher() -> None:
    ratio = torch.tensor([[1.25, 1.5, 0.75]])
    adv = torch.tensor([[1.0, 1.0, -1.0]])
    out = clipped_surrogate(ratio.log(), torch.zeros(1, 3), adv, epsilon=0.2, epsilon_high=0.28)
    # 1.25 < 1.28 unclipped: -1.25; 1.5 -> -1.28 clipped; low side still 0.8: -min(-0.75, -0.8).
    torch.testing.assert_close(out.loss, torch.tensor([[-1.25, -1.28, 0.8]]))
    assert out.clipped_high.tolist() == [[False, True, False]]
    assert out.clipped_low.tolist() == [[False, False, True]]
    # Same tokens with symmetric eps=0.2 clip the first one too.
    sym = clipped_surrogate(ratio.log(), torch.zeros(1, 3), adv, epsilon=0.2)
    torch.testing.assert_close(sym.loss, torch.tensor([[-1.2, -1.2, 0.8]]))


def test_surrogate_exact_boundary_is_not_clipped() -> None:
    # Ratios exactly 1 - eps_low = 0.5 and 1 + eps_high = 2.0 (exact in fp32): both branches
    # coincide, so the token is not reported as clipped and keeps its gradient -A r.
    ratio = torch.tensor([[0.5, 2.0]])
    logp = ratio.log().requires_grad_(True)
    assert torch.equal(logp.detach().exp(), ratio)
    adv = torch.tensor([[-1.0, 1.0]])
    out = clipped_surrogate(logp, torch.zeros(1, 2), adv, epsilon=0.5, epsilon_high=1.0)
    torch.testing.assert_close(out.loss, torch.tensor([[0.5, -2.0]]))
    assert not out.clipped.any()
    out.loss.sum().backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[0.5, -2.0]]))


def test_surrogate_gradient_at_ratio_one_is_minus_advantage() -> None:
    g = torch.Generator().manual_seed(0)
    logp = (-torch.rand(3, 4, generator=g) * 3).requires_grad_(True)
    adv = torch.tensor([0.7, -1.3, 0.0])
    clipped_surrogate(logp, logp.detach(), adv).loss.sum().backward()
    torch.testing.assert_close(logp.grad, (-adv).unsqueeze(1).expand(3, 4))


def test_dual_clip_caps_negative_advantage_losses() -> None:
    # A = -1, eps 0.2, c = 3: r = 4 -> max(4, 1.2) = 4 capped at 3 (no gradient); r = 2.5 stays
    # 2.5 (gradient -A r = 2.5); A = +1, r = 4 -> -1.2 (upper clip, not dual).
    ratio = torch.tensor([[4.0, 2.5, 4.0]])
    adv = torch.tensor([[-1.0, -1.0, 1.0]])
    logp = ratio.log().requires_grad_(True)
    params = ObjectiveParams(epsilon=0.2, clip_ratio_c=3.0)
    out = policy_objective("clip", logp, torch.zeros(1, 3), adv, params)
    torch.testing.assert_close(out.loss, torch.tensor([[3.0, 2.5, -1.2]]))
    assert out.dual_clipped.tolist() == [[True, False, False]]
    assert out.clipped_high.tolist() == [[False, False, True]]
    out.loss.sum().backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[0.0, 2.5, 0.0]]))
    # Without dual-clip the first token's loss is 4, with gradient 4.
    plain = policy_objective("clip", ratio.log(), torch.zeros(1, 3), adv, ObjectiveParams())
    torch.testing.assert_close(plain.loss, torch.tensor([[4.0, 2.5, -1.2]]))


def test_gspo_sequence_ratio_hand_values() -> None:
    # Sequence 0: token ratios 1.1, 1.3 -> s = sqrt(1.43) = 1.1958261 < 1.2, A = +1: loss -s,
    # gradient -A s per token. Sequence 1: 1.5, 1.2 -> s = sqrt(1.8) = 1.3416408 > 1.2: clipped,
    # loss -1.2, no gradient.
    logp = torch.log(torch.tensor([[1.1, 1.3], [1.5, 1.2]])).requires_grad_(True)
    old = torch.zeros(2, 2)
    seq = (logp.detach() - old).mean(dim=-1)
    out = policy_objective("gspo", logp, old, torch.tensor([1.0, 1.0]), ObjectiveParams(), seq)
    s0, s1 = math.sqrt(1.43), math.sqrt(1.8)
    torch.testing.assert_close(out.loss, torch.tensor([[-s0, -s0], [-1.2, -1.2]]))
    torch.testing.assert_close(out.ratio, torch.tensor([[s0, s0], [s1, s1]]))
    assert out.clipped_high.tolist() == [[False, False], [True, True]]
    out.loss.sum().backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[-s0, -s0], [0.0, 0.0]]))


def test_gspo_token_form_gradient_equals_the_sequence_objective() -> None:
    # GSPO's objective -1/S sum_i min(s_i A_i, clip(s_i) A_i), s_i = exp(mean_t(logp - old)),
    # differentiated through the mean, against the token form averaged per sequence.
    g = torch.Generator().manual_seed(3)
    logp0 = -torch.rand(5, 4, generator=g, dtype=torch.float64) * 2
    old = logp0 + 0.2 * torch.randn(5, 4, generator=g, dtype=torch.float64)
    adv = torch.randn(5, generator=g, dtype=torch.float64)
    params = ObjectiveParams(epsilon=0.05, epsilon_high=0.08)
    direct = logp0.clone().requires_grad_(True)
    s = torch.exp((direct - old).mean(dim=-1))
    seq_loss = -torch.minimum(s * adv, s.clamp(0.95, 1.08) * adv)
    seq_loss.mean().backward()
    token = logp0.clone().requires_grad_(True)
    out = policy_objective("gspo", token, old, adv, params, (logp0 - old).mean(dim=-1))
    out.loss.mean(dim=-1).mean().backward()
    torch.testing.assert_close(token.grad, direct.grad, atol=1e-12, rtol=0)
    clipped = (s.detach() > 1.08) & (adv > 0) | (s.detach() < 0.95) & (adv < 0)
    assert 0 < int(clipped.sum()) < 5  # both branches exercised


def test_gspo_log_ratio_clamped_at_ten() -> None:
    logp = torch.zeros(1, 2, requires_grad=True)
    out = policy_objective(
        "gspo",
        logp,
        torch.zeros(1, 2),
        torch.tensor([-1.0]),
        ObjectiveParams(),
        torch.tensor([12.0]),
    )
    torch.testing.assert_close(out.ratio, torch.full((1, 2), math.exp(10.0)))


def test_cispo_every_token_keeps_its_gradient() -> None:
    # r = [1.5, 0.5, 1.0], A = [1, -1, 2]: weights sg(clip(r, 0.8, 1.2)) = [1.2, 0.8, 1.0];
    # loss -w A logp; gradient -w A = [-1.2, 0.8, -2], also for the clipped tokens.
    ratio = torch.tensor([[1.5, 0.5, 1.0]])
    old = torch.log(torch.tensor([[0.2, 0.4, 0.5]]))
    logp = (old + ratio.log()).requires_grad_(True)
    adv = torch.tensor([[1.0, -1.0, 2.0]])
    out = policy_objective("cispo", logp, old, adv, ObjectiveParams(epsilon=0.2))
    w = torch.tensor([[1.2, 0.8, 1.0]])
    torch.testing.assert_close(out.loss, -w * adv * logp.detach())
    assert out.clipped_high.tolist() == [[True, False, False]]
    assert out.clipped_low.tolist() == [[False, True, False]]
    out.loss.sum().backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[-1.2, 0.8, -2.0]]))


def test_sapo_soft_gate_hand_values() -> None:
    # f(r) = 4 / tau * sigmoid(tau (r - 1)); loss -f A; d loss / d logp = -A f'(r) r with
    # f'(r) = 4 sigmoid (1 - sigmoid). Token 0: r = 1, A = +1, tau_pos = 1: f = 2, gradient -1
    # (PPO's at ratio 1). Token 1: r = 2, A = -1, tau_neg = 1.05.
    logp = torch.log(torch.tensor([[1.0, 2.0]])).requires_grad_(True)
    adv = torch.tensor([[1.0, -1.0]])
    out = policy_objective("sapo", logp, torch.zeros(1, 2), adv, ObjectiveParams())
    sig = 1 / (1 + math.exp(-1.05))
    f1 = 4 / 1.05 * sig
    torch.testing.assert_close(out.loss, torch.tensor([[-2.0, f1]]))
    out.loss.sum().backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[-1.0, 4 * sig * (1 - sig) * 2.0]]))
    assert not out.clipped.any()


@pytest.mark.parametrize("objective", ["clip", "gspo", "cispo", "sapo"])
def test_every_objective_has_ppo_gradient_on_policy(objective: str) -> None:
    # At ratio 1 (old = current) every objective's gradient is -A per token.
    g = torch.Generator().manual_seed(1)
    logp = (-torch.rand(3, 4, generator=g) * 3).requires_grad_(True)
    adv = torch.tensor([0.7, -1.3, 0.0])
    seq = torch.zeros(3)
    out = policy_objective(objective, logp, logp.detach(), adv, ObjectiveParams(), seq)  # type: ignore[arg-type]
    out.loss.sum().backward()
    torch.testing.assert_close(logp.grad, (-adv).unsqueeze(1).expand(3, 4))


def test_unknown_objective_and_gspo_without_sequence_ratio_raise() -> None:
    with pytest.raises(ValueError, match="unknown policy objective"):
        policy_objective(
            "ppo", torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1), ObjectiveParams()
        )  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="seq_log_ratio"):
        policy_objective(
            "gspo", torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1), ObjectiveParams()
        )


def test_token_mult_prob_error_masked_mean() -> None:
    trainer = torch.tensor([[0.0, 0.0, 0.0], [0.0, 5.0, float("nan")]])
    rollout = torch.tensor([[-LN(3.0), LN(2.0), 0.0], [LN(4.0), 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    # exp(|d|) over masked tokens: (3 + 2 + 1 + 4) / 4 = 2.5; NaN / unmasked ignored.
    torch.testing.assert_close(token_mult_prob_error(trainer, rollout, mask), torch.tensor(2.5))

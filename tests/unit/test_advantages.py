"""Group advantages: hand-computed values, zero-std groups, validation."""

import math

import pytest
import torch

from oumi_megatron.algorithms import compute_group_advantages

R = torch.tensor([1.0, 0.0, 0.0, 1.0])


def test_grpo_group_size_2_unbiased_std() -> None:
    # Groups [1, 0], [0, 1]: mean 0.5, unbiased std sqrt((0.25 + 0.25) / 1) = 0.7071068.
    out = compute_group_advantages(R, num_generations=2, eps=0.0)
    s = 0.5 / math.sqrt(0.5)  # 0.7071068
    torch.testing.assert_close(out.advantages, torch.tensor([s, -s, -s, s]))
    torch.testing.assert_close(out.group_mean, torch.tensor([0.5, 0.5]))
    torch.testing.assert_close(out.group_std, torch.tensor([0.7071068, 0.7071068]))
    assert out.frac_zero_std.item() == 0.0


def test_grpo_group_size_4_unbiased_std() -> None:
    # One group: mean 0.5, unbiased std sqrt(4 * 0.25 / 3) = 0.5773503 -> adv +-0.8660254.
    out = compute_group_advantages(R, num_generations=4, eps=0.0)
    torch.testing.assert_close(
        out.advantages, torch.tensor([0.8660254, -0.8660254, -0.8660254, 0.8660254])
    )
    torch.testing.assert_close(out.group_std, torch.tensor([0.5773503]))


def test_grpo_default_eps_is_trl_1e4() -> None:
    # 0.5 / (0.70710678 + 1e-4) = 0.7070068
    out = compute_group_advantages(R, num_generations=2)
    torch.testing.assert_close(
        out.advantages, torch.tensor([0.7070068, -0.7070068, -0.7070068, 0.7070068])
    )


def test_grpo_without_std_scaling() -> None:
    out = compute_group_advantages(R, num_generations=2, scale_rewards=False)
    torch.testing.assert_close(out.advantages, torch.tensor([0.5, -0.5, -0.5, 0.5]))


def test_dr_grpo_never_scales() -> None:
    r = torch.tensor([1.0, 2.0, 3.0, 5.0])
    # Contiguous groups [1, 2], [3, 5]: means 1.5, 4 (interleaved grouping would give
    # [-1, -1.5, 1, 1.5]).
    out = compute_group_advantages(r, num_generations=2, estimator="dr_grpo", scale_rewards=True)
    torch.testing.assert_close(out.advantages, torch.tensor([-0.5, 0.5, -1.0, 1.0]))


def test_zero_std_groups_give_zero_advantage_and_no_nan() -> None:
    # Groups [1, 1], [0, 0.5], [0.1, 0.1]; eps=0 would give 0/0 without special handling.
    r = torch.tensor([1.0, 1.0, 0.0, 0.5, 0.1, 0.1])
    out = compute_group_advantages(r, num_generations=2, eps=0.0)
    # Middle group: mean 0.25, std sqrt(2 * 0.0625) = 0.3535534 -> +-0.7071068.
    torch.testing.assert_close(
        out.advantages, torch.tensor([0.0, 0.0, -0.7071068, 0.7071068, 0.0, 0.0])
    )
    assert not torch.isnan(out.advantages).any()
    assert out.zero_std.tolist() == [True, False, True]
    torch.testing.assert_close(out.frac_zero_std, torch.tensor(2.0 / 3.0))


@pytest.mark.parametrize("eps", [0.0, 1e-4])
def test_equal_rewards_with_mean_rounding_are_exactly_zero(eps: float) -> None:
    # fp32 mean of eight 0.7s is off by ~6e-8, so (r - mean) / (std + eps) would be
    # ~0.93 at eps=0 and ~6e-4 at eps=1e-4 without the zero-std override.
    out = compute_group_advantages(torch.full((8,), 0.7), num_generations=8, eps=eps)
    assert torch.equal(out.advantages, torch.zeros(8))
    assert out.frac_zero_std.item() == 1.0


def test_low_precision_rewards_are_upcast() -> None:
    out = compute_group_advantages(R.to(torch.bfloat16), num_generations=2, scale_rewards=False)
    assert out.advantages.dtype == torch.float32
    torch.testing.assert_close(out.advantages, torch.tensor([0.5, -0.5, -0.5, 0.5]))


@pytest.mark.parametrize(
    ("rewards", "g", "estimator"),
    [
        (torch.zeros(4), 0, "grpo"),
        (torch.zeros(5), 2, "grpo"),
        (torch.zeros(2, 2), 2, "grpo"),
        (torch.zeros(4), 2, "ppo"),
    ],
)
def test_invalid_inputs_raise(rewards: torch.Tensor, g: int, estimator: str) -> None:
    with pytest.raises(ValueError):
        compute_group_advantages(
            rewards,
            num_generations=g,
            estimator=estimator,  # type: ignore[arg-type]
        )


def test_unequal_groups_and_a_group_of_one_as_verl() -> None:
    # Groups [1, 0, 0] (mean 1/3, unbiased std sqrt(1/3)), [5] (verl: mean 0, std 1),
    # [2, 4] (mean 3, std sqrt(2)).
    r = torch.tensor([1.0, 0.0, 0.0, 5.0, 2.0, 4.0])
    out = compute_group_advantages(r, num_generations=[3, 1, 2], eps=0.0)
    s3 = math.sqrt(1.0 / 3.0)
    expected = [
        (2 / 3) / s3,
        (-1 / 3) / s3,
        (-1 / 3) / s3,
        5.0,
        -1 / math.sqrt(2),
        1 / math.sqrt(2),
    ]
    torch.testing.assert_close(out.advantages, torch.tensor(expected))
    torch.testing.assert_close(out.group_mean, torch.tensor([1 / 3, 0.0, 3.0]))
    torch.testing.assert_close(out.group_std, torch.tensor([s3, 1.0, math.sqrt(2)]))
    assert out.zero_std.tolist() == [False, True, False]
    # Unscaled: the group of one keeps its reward.
    flat = compute_group_advantages(r, num_generations=[3, 1, 2], scale_rewards="none")
    torch.testing.assert_close(
        flat.advantages, torch.tensor([2 / 3, -1 / 3, -1 / 3, 5.0, -1.0, 1.0])
    )
    # Equal sizes given as a list are the same as the int form.
    same = compute_group_advantages(R, num_generations=[2, 2])
    torch.testing.assert_close(same.advantages, compute_group_advantages(R, 2).advantages)


def test_batch_scaling_divides_by_the_step_std() -> None:
    # r = [1, 2, 3, 5]: group means 1.5, 4; batch mean 2.75, unbiased batch std
    # sqrt((3.0625 + 0.5625 + 0.0625 + 5.0625) / 3) = sqrt(8.75 / 3) = 1.7078251.
    r = torch.tensor([1.0, 2.0, 3.0, 5.0])
    out = compute_group_advantages(r, 2, scale_rewards="batch", eps=0.0)
    s = math.sqrt(8.75 / 3)
    torch.testing.assert_close(out.advantages, torch.tensor([-0.5, 0.5, -1.0, 1.0]) / s)
    # The std of the whole step (other replicas' rewards) when given.
    given = compute_group_advantages(r, 2, scale_rewards="batch", eps=1e-4, batch_std=2.0)
    torch.testing.assert_close(given.advantages, torch.tensor([-0.5, 0.5, -1.0, 1.0]) / 2.0001)


def test_batch_reward_std_over_parts_equals_the_whole() -> None:
    from oumi_megatron.algorithms.advantages import batch_reward_std

    r = torch.tensor([1.0, 2.0, 3.0, 5.0, 0.5, 7.0])
    parts = [r[:1], r[1:4], r[4:], r[:0]]
    stats = []

    def record(t: torch.Tensor) -> None:
        stats.append(t.clone())

    for p in parts:
        batch_reward_std(p, record)
    total = torch.stack(stats).sum(0)

    def summed(t: torch.Tensor) -> None:
        t.copy_(total)

    assert batch_reward_std(r[:0], summed) == pytest.approx(float(r.double().std()), rel=1e-12)
    assert batch_reward_std(r) == pytest.approx(float(r.double().std()), rel=1e-12)

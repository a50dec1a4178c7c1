"""How many steps a run trains: training.max_steps, or whole epochs when it is <= 0."""

from __future__ import annotations

import pytest

from oumi_megatron.step.length import training_steps


def test_max_steps_wins_when_positive():
    assert training_steps(7, 3, num_prompts=100, prompts_per_step=8) == 7


@pytest.mark.parametrize(
    ("epochs", "prompts", "per_step", "steps"),
    [(1, 8, 4, 2), (1, 9, 4, 3), (3, 8, 4, 6), (2, 10, 4, 5), (1, 3, 8, 1)],
)
def test_epochs_cover_every_prompt(epochs, prompts, per_step, steps):
    assert training_steps(-1, epochs, prompts, per_step) == steps
    assert training_steps(0, epochs, prompts, per_step) == steps
    assert steps * per_step >= epochs * prompts > (steps - 1) * per_step


def test_no_step_is_an_error():
    with pytest.raises(
        ValueError, match=r"max_steps \(-1\) <= 0 and training.num_train_epochs \(0\)"
    ):
        training_steps(-1, 0, num_prompts=8, prompts_per_step=4)

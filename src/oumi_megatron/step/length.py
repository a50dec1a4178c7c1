"""How many GRPO steps a run trains: ``training.max_steps``, or whole epochs of the prompts."""

from __future__ import annotations

import math


def training_steps(
    max_steps: int, num_train_epochs: float, num_prompts: int, prompts_per_step: int
) -> int:
    """``max_steps`` when positive; otherwise enough steps for every prompt to be seen
    ``num_train_epochs`` times (Oumi's and Hugging Face's rule). A step that crosses the end of
    an epoch is completed from the next one (``PromptDataLoader``), so the last step is full.

    Raises:
        ValueError: when neither gives a positive number of steps.
    """
    if max_steps > 0:
        return int(max_steps)
    steps = math.ceil(num_train_epochs * num_prompts / prompts_per_step)
    if steps <= 0:
        raise ValueError(
            f"training.max_steps ({max_steps}) <= 0 and training.num_train_epochs "
            f"({num_train_epochs}) of {num_prompts} prompts give no step to train"
        )
    return steps

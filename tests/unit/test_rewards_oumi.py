"""Interop with Oumi's REWARD_FUNCTION registry (imports Oumi: ~20 s, so a single test)."""

from __future__ import annotations

import pytest

from oumi_megatron.rewards import RewardResolutionError, resolve_reward_function
from oumi_megatron.rewards.gsm8k import gsm8k_accuracy


def test_oumi_registry_interop() -> None:
    from oumi.builders.rewards import build_reward_functions
    from oumi.core.configs import TrainerType, TrainingParams
    from oumi.core.registry import REGISTRY, RegistryType, register

    from oumi_megatron.rewards import available_reward_names, register_with_oumi

    assert register_with_oumi() and register_with_oumi()  # idempotent
    assert REGISTRY.get_reward_function("gsm8k_accuracy") is gsm8k_accuracy
    # Oumi's own builder (TRL_GRPO path) finds our built-in.
    params = TrainingParams(trainer_type=TrainerType.TRL_GRPO, reward_functions=["gsm8k_accuracy"])
    built = build_reward_functions(params)
    assert built[0](["#### 2"], answer=["2"]) == [1.0]

    # Oumi's built-in TRL-style reward and a user-registered one resolve by name.
    soft = resolve_reward_function("soft_5tokens_completions")
    assert soft.source == "oumi" and soft(["a b c d e"]) == pytest.approx([1.0])

    @register("test_user_reward", RegistryType.REWARD_FUNCTION)
    def user_reward(completions, **kwargs):
        return [kwargs["bonus"]] * len(completions)

    assert resolve_reward_function("test_user_reward", {"bonus": 2.0})(["x"]) == [2.0]
    # count_letters reads TRL's conversational completions: we wrap our strings.
    letters = resolve_reward_function("count_letters")
    assert letters(["\\boxed{3}", "none"], letter_count=[3, 3]) == [0.0, -3.0]  # 0 is the best

    # VERL-signature rewards are refused with our equivalent.
    with pytest.raises(RewardResolutionError, match="use 'countdown_equation' instead"):
        resolve_reward_function("countdown")
    assert {"gsm8k_accuracy", "soft_5tokens_completions", "count_letters"} <= set(
        available_reward_names()
    )
    with pytest.raises(RewardResolutionError, match="Did you mean 'count_letters'"):
        resolve_reward_function("count_leters")


_FRESH_PROCESS = """
import sys
import oumi_megatron  # arms the post-import hooks, as the installed .pth file does
from oumi.core.registry import REGISTRY
from oumi_megatron.rewards import BUILTIN_REWARDS, resolve_reward_function

resolve_reward_function("arithmetic_dense")
print("oumi.datasets loaded by a built-in:", "oumi.datasets" in sys.modules)
import oumi.datasets.grpo.rewards  # what Oumi's build_reward_functions does before its lookup
found = REGISTRY.get_reward_function("arithmetic_dense")
print("Oumi finds ours:", found is BUILTIN_REWARDS["arithmetic_dense"])
"""


def test_builtin_resolves_without_oumi_datasets_and_oumi_still_finds_it() -> None:
    """A built-in never loads Oumi's registry (~7 s a rank); the import hook registers ours when
    Oumi loads its rewards."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _FRESH_PROCESS], capture_output=True, text=True, check=True
    )
    assert "oumi.datasets loaded by a built-in: False" in done.stdout, done.stdout + done.stderr
    assert "Oumi finds ours: True" in done.stdout, done.stdout + done.stderr

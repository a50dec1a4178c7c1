"""Reward name resolution without Oumi: built-ins, import paths, helpful errors."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from oumi_megatron.rewards import (
    BUILTIN_REWARDS,
    RewardResolutionError,
    resolve_reward_function,
    resolve_reward_functions,
)
from oumi_megatron.rewards import registry as registry_module


@pytest.fixture
def helpers_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(Path(__file__).parent))


def test_builtins_resolve_case_insensitively_with_kwargs() -> None:
    fn = resolve_reward_function("GSM8K_Accuracy", {"format_score": 0.5})
    assert fn.name == "gsm8k_accuracy" and fn.source == "builtin"
    assert fn(["#### 3", "#### 4"], answer=["3", "5"]) == [1.0, 0.5]


def test_configured_kwargs_override_columns() -> None:
    fn = resolve_reward_function("arithmetic_exact", {"target": [9]})
    assert fn(["9"], target=[1]) == [1.0]


@pytest.mark.parametrize("path", ["_reward_helpers:length_reward", "_reward_helpers.length_reward"])
def test_import_path(helpers_on_path: None, path: str) -> None:
    fn = resolve_reward_function(path, {"scale": 2.0})
    assert fn.source == "import"
    assert fn(["abc", ""], prompts=["p", "q"], answer=["x", "y"]) == [6.0, 0.0]


def test_function_without_var_kwargs_gets_only_its_parameters(helpers_on_path: None) -> None:
    fn = resolve_reward_function("_reward_helpers:answer_only")
    assert fn(["a", "b"], prompts=["p", "q"], answer=["a", "a"], target=[1, 2]) == [1.0, 0.0]


def test_import_path_errors(helpers_on_path: None) -> None:
    with pytest.raises(RewardResolutionError, match="cannot import module 'no_such_mod'"):
        resolve_reward_function("no_such_mod:fn")
    with pytest.raises(RewardResolutionError, match="Did you mean 'length_reward'"):
        resolve_reward_function("_reward_helpers:lenght_reward")
    with pytest.raises(RewardResolutionError, match="not callable"):
        resolve_reward_function("_reward_helpers:NOT_CALLABLE")


def test_unknown_name_lists_names_and_suggests(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_module, "_oumi_registry", lambda **_: None)  # no 20 s Oumi import
    with pytest.raises(RewardResolutionError) as info:
        resolve_reward_function("gsm8k_acuracy")
    message = str(info.value)
    assert "unknown reward function 'gsm8k_acuracy'. Did you mean 'gsm8k_accuracy'?" in message
    assert all(name in message for name in BUILTIN_REWARDS)
    assert "package.module:function" in message


def test_list_errors() -> None:
    with pytest.raises(RewardResolutionError, match="listed twice"):
        resolve_reward_functions(["format_reward", "Format_Reward"])
    with pytest.raises(RewardResolutionError, match=r"entries \['typo'\]"):
        resolve_reward_functions(["format_reward"], {"typo": {}})


def test_reward_modules_do_not_import_oumi() -> None:
    code = textwrap.dedent(
        """
        import sys
        from oumi_megatron.rewards import resolve_reward_functions, score_rollouts
        fns = resolve_reward_functions(["gsm8k_accuracy", "countdown_equation", "format_reward"])
        result = score_rollouts(fns, ["#### 1"], sample_ids=["s"],
                                columns=[{"answer": "1", "numbers": [1], "target": 1}])
        assert result.total[0] == 1.0, result
        assert not any(m == "oumi" or m.startswith("oumi.") for m in sys.modules), "oumi imported"
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)

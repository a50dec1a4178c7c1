"""score_rollouts: weighted totals, per-function metrics, failures that never stop the run."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from oumi_megatron.rewards import RewardFunction, resolve_reward_functions, score_rollouts


def _fn(name: str, body: Any) -> RewardFunction:
    return RewardFunction(name, body)


def test_weighted_total_and_metrics() -> None:
    functions = resolve_reward_functions(
        ["arithmetic_exact", "format_reward"],
        {"format_reward": {"pattern": r"\d+", "score": 2.0}},
    )
    result = score_rollouts(
        functions,
        ["7", "x", "3"],
        sample_ids=["a", "b", "c"],
        columns=[{"target": 7}, {"target": 7}, {"target": 4}],
        weights=[1.0, 0.5],
    )
    assert result.per_function == {
        "arithmetic_exact": [1.0, 0.0, 0.0],
        "format_reward": [2.0, 0.0, 2.0],
    }
    assert result.total == [2.0, 0.0, 1.0]
    metrics = result.metrics()
    assert metrics["reward/mean"] == pytest.approx(1.0)
    assert metrics["reward/arithmetic_exact/mean"] == pytest.approx(1 / 3)
    assert metrics["reward/failures"] == 0.0
    assert metrics["reward/format_reward/failures"] == 0.0
    assert "reward/format_reward/seconds" in metrics


def test_columns_as_lists_and_prompts_are_passed() -> None:
    seen: dict[str, Any] = {}

    def spy(
        completions: list[str], prompts: list[str] | None = None, **columns: Any
    ) -> list[float]:
        seen.update(prompts=prompts, **columns)
        return [0.0] * len(completions)

    score_rollouts(
        [_fn("spy", spy)],
        ["a", "b"],
        sample_ids=["1", "2"],
        prompts=["p1", "p2"],
        columns={"answer": ["x", "y"]},
    )
    assert seen == {"prompts": ["p1", "p2"], "answer": ["x", "y"]}


def test_raising_function_falls_back_per_sample_and_logs_sample_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def fragile(completions: list[str], **_: Any) -> list[float]:
        if "boom" in completions:
            raise ZeroDivisionError("bad sample")
        return [1.0] * len(completions)

    functions = [_fn("fragile", fragile), *resolve_reward_functions(["arithmetic_exact"])]
    with caplog.at_level(logging.WARNING, logger="oumi_megatron.rewards"):
        result = score_rollouts(
            functions,
            ["1", "boom", "1"],
            sample_ids=["gsm8k:1#0", "gsm8k:2#0", "gsm8k:3#0"],
            columns=[{"target": 1}] * 3,
        )
    # Only the failing sample lost the fragile reward; the other function still scored it.
    assert result.per_function["fragile"] == [1.0, 0.0, 1.0]
    assert result.total == [2.0, 0.0, 2.0]
    assert result.failures == {"fragile": 1, "arithmetic_exact": 0}
    assert result.metrics()["reward/failures"] == 1.0
    assert result.metrics()["reward/fragile/failures"] == 1.0
    assert [(f.function, f.sample_id) for f in result.failed] == [("fragile", "gsm8k:2#0")]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "gsm8k:2#0" in warnings[0] and "ZeroDivisionError: bad sample" in warnings[0]


def test_none_and_invalid_values() -> None:
    import numpy as np
    import torch

    values = [None, 0.5, float("nan"), "high", True, np.float32(0.25), torch.tensor(2.0)]
    values += [torch.ones(2), float("inf")]
    result = score_rollouts(
        [_fn("odd", lambda completions, **_: values)],
        list("abcdefghi"),
        sample_ids=list("abcdefghi"),
    )
    assert result.per_function["odd"] == [0.0, 0.5, 0.0, 0.0, 1.0, 0.25, 2.0, 0.0, 0.0]
    assert result.nones == {"odd": 1}
    assert result.failures == {"odd": 4}  # NaN, the string, the 2-element tensor, inf
    assert result.metrics()["reward/none"] == 1.0


def test_wrong_length_retries_per_sample() -> None:
    calls: list[int] = []

    def short(completions: list[str], **_: Any) -> list[float]:
        calls.append(len(completions))
        return [1.0]

    result = score_rollouts([_fn("short", short)], ["a", "b", "c"], sample_ids=["1", "2", "3"])
    assert calls == [3, 1, 1, 1]
    assert result.per_function["short"] == [1.0, 1.0, 1.0]
    assert result.failures == {"short": 0}


def test_every_sample_failing_is_summarised(caplog: pytest.LogCaptureFixture) -> None:
    def broken(completions: list[str], **_: Any) -> list[float]:
        raise RuntimeError("always")

    with caplog.at_level(logging.WARNING, logger="oumi_megatron.rewards"):
        result = score_rollouts(
            [_fn("broken", broken)], ["x"] * 12, sample_ids=[str(i) for i in range(12)]
        )
    assert result.total == [0.0] * 12 and result.failures == {"broken": 12}
    assert len(result.failed) == 12
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 6 and "7 more failures" in messages[-1]


def test_input_validation() -> None:
    exact = resolve_reward_functions(["arithmetic_exact"])
    with pytest.raises(ValueError, match="one entry per completion"):
        score_rollouts(exact, ["1"], sample_ids=[])
    with pytest.raises(ValueError, match="weights"):
        score_rollouts(exact, ["1"], sample_ids=["a"], columns={"target": [1]}, weights=[1, 2])
    with pytest.raises(ValueError, match="column 'target' has 2 values"):
        score_rollouts(exact, ["1"], sample_ids=["a"], columns={"target": [1, 2]})
    with pytest.raises(ValueError, match="clash"):
        score_rollouts(exact, ["1"], sample_ids=["a"], columns=[{"prompts": 1}])
    assert score_rollouts(exact, [], sample_ids=[]).metrics()["reward/failures"] == 0.0

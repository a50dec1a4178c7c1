"""Score a rollout batch with several reward functions, robust to failing functions.

A reward function that raises gives the affected samples 0 for that function; the run goes on.
If a call on the whole batch raises (or returns the wrong number of values), the function is
called again sample by sample, so only the samples that really fail get 0. Every failure is
counted (``reward/failures``, ``reward/<name>/failures``) and logged with its sample id. Values
that are not finite numbers count as failures too. ``None`` (TRL: "not applicable to this
sample") becomes 0 and is counted apart (``reward/none``, ``reward/<name>/none``).
"""

from __future__ import annotations

import logging
import math
import numbers
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from oumi_megatron.rewards.registry import RewardFunction

logger = logging.getLogger(__name__)

RESERVED_COLUMNS = frozenset({"completions", "prompts", "completion_ids"})
_MAX_WARNINGS_PER_FUNCTION = 5  # per call; the rest are summarised, not dropped from counts


def metric_name(name: str) -> str:
    """A reward function's name in metric keys: a file path's folders dropped, so that keys
    keep their ``reward/<name>/<what>`` shape (``/tmp/my_rewards.py:fn`` -> ``my_rewards.py:fn``)."""
    return name.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class RewardFailure:
    """One sample a reward function could not score."""

    function: str
    sample_id: str
    error: str


@dataclass
class RewardResult:
    """Weighted total per sample, each function's rewards, and what went wrong."""

    total: list[float]
    per_function: dict[str, list[float]]
    failures: dict[str, int]
    nones: dict[str, int]
    failed: list[RewardFailure] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def metrics(self, prefix: str = "reward") -> dict[str, float]:
        """Scalar metrics: totals, per-function means, failure and None counts, time."""
        out = _stats(prefix, self.total)
        out[f"{prefix}/failures"] = float(sum(self.failures.values()))
        out[f"{prefix}/none"] = float(sum(self.nones.values()))
        for name, values in self.per_function.items():
            key = f"{prefix}/{metric_name(name)}"
            out[f"{key}/mean"] = statistics.fmean(values) if values else 0.0
            out[f"{key}/failures"] = float(self.failures[name])
            out[f"{key}/none"] = float(self.nones[name])
            out[f"{key}/seconds"] = self.seconds.get(name, 0.0)
        return out


def _stats(prefix: str, values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {}
    return {
        f"{prefix}/mean": statistics.fmean(values),
        f"{prefix}/std": statistics.pstdev(values),
        f"{prefix}/min": min(values),
        f"{prefix}/max": max(values),
    }


def columns_by_name(
    columns: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]] | None, n: int
) -> dict[str, list[Any]]:
    """Column lists aligned with the samples, from per-sample dicts or from column lists.

    A key missing in some per-sample dicts becomes None there.
    """
    if columns is None:
        return {}
    if isinstance(columns, Mapping):
        out = {k: list(v) for k, v in columns.items()}
    else:
        if len(columns) != n:
            raise ValueError(f"got {len(columns)} column rows for {n} completions")
        keys = dict.fromkeys(k for row in columns for k in row)
        out = {k: [row.get(k) for row in columns] for k in keys}
    for key, values in out.items():
        if len(values) != n:
            raise ValueError(f"column {key!r} has {len(values)} values for {n} completions")
    clash = RESERVED_COLUMNS & out.keys()
    if clash:
        raise ValueError(
            f"dataset columns {sorted(clash)} clash with reward arguments; rename them"
        )
    return out


def _checked(values: Any, expected: int) -> list[Any]:
    if isinstance(values, str | bytes) or not isinstance(values, Sequence):
        raise TypeError(f"returned {type(values).__name__}, expected a list of floats")
    if len(values) != expected:
        raise ValueError(f"returned {len(values)} values for {expected} completions")
    return list(values)


def _as_reward(value: Any) -> float | None:
    """The value as a finite float; None stays None; anything else raises."""
    if value is None:
        return None
    # Real covers bool and numpy scalars; __float__ covers 0-d tensors. Not str: "1" is no reward.
    if not isinstance(value, numbers.Real) and not hasattr(value, "__float__"):
        raise TypeError(f"returned {type(value).__name__} {value!r}, expected a float")
    result = float(value)
    if not math.isfinite(result):
        raise ValueError(f"returned non-finite reward {result}")
    return result


def _run_function(
    function: RewardFunction,
    completions: Sequence[str],
    prompts: Sequence[str] | None,
    columns: dict[str, list[Any]],
) -> list[Any]:
    """Raw per-sample outputs; an Exception instance marks a sample whose call raised."""
    n = len(completions)
    try:
        return _checked(function(completions, prompts, **columns), n)
    except Exception as error:  # any error in user code must not stop training
        if n == 1:
            return [error]
        logger.info(
            "reward %r failed on the batch (%r); retrying sample by sample", function.name, error
        )
    outputs: list[Any] = []
    for i in range(n):
        one_prompt = None if prompts is None else [prompts[i]]
        one_columns = {k: [v[i]] for k, v in columns.items()}
        try:
            outputs.append(_checked(function([completions[i]], one_prompt, **one_columns), 1)[0])
        except Exception as error:
            outputs.append(error)
    return outputs


def score_rollouts(
    functions: Sequence[RewardFunction],
    completions: Sequence[str],
    *,
    sample_ids: Sequence[str],
    prompts: Sequence[str] | None = None,
    columns: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]] | None = None,
    weights: Sequence[float] | None = None,
) -> RewardResult:
    """Rewards of ``completions``: ``total[i] = sum_f weights[f] * reward_f[i]``.

    ``sample_ids``, ``prompts`` and ``columns`` are aligned with ``completions`` (one entry per
    completion, so a prompt's dataset columns repeat for each of its generations).
    """
    n = len(completions)
    if len(sample_ids) != n or (prompts is not None and len(prompts) != n):
        raise ValueError("sample_ids and prompts must have one entry per completion")
    weights = [1.0] * len(functions) if weights is None else list(weights)
    if len(weights) != len(functions):
        raise ValueError(f"{len(weights)} weights for {len(functions)} reward functions")
    by_name = columns_by_name(columns, n)
    result = RewardResult([0.0] * n, {}, {}, {})
    for function, weight in zip(functions, weights, strict=True):
        start = time.perf_counter()
        raw = _run_function(function, completions, prompts, by_name)
        result.seconds[function.name] = time.perf_counter() - start
        rewards, failures, nones = [], 0, 0
        for i, value in enumerate(raw):
            error = value if isinstance(value, Exception) else None
            reward = None
            if error is None:
                try:
                    reward = _as_reward(value)
                except Exception as bad_value:  # e.g. a 2-element tensor
                    error = bad_value
            if error is not None:
                failures += 1
                _record_failure(result, function.name, str(sample_ids[i]), error, failures)
                reward = 0.0
            elif reward is None:
                nones += 1
                reward = 0.0
            rewards.append(reward)
            result.total[i] += weight * reward
        if failures > _MAX_WARNINGS_PER_FUNCTION:
            logger.warning(
                "reward %r: %d more failures not shown (%d of %d samples scored 0)",
                function.name,
                failures - _MAX_WARNINGS_PER_FUNCTION,
                failures,
                n,
            )
        result.per_function[function.name] = rewards
        result.failures[function.name] = failures
        result.nones[function.name] = nones
    return result


def _record_failure(
    result: RewardResult, name: str, sample_id: str, error: BaseException, count: int
) -> None:
    message = f"{type(error).__name__}: {error}"
    result.failed.append(RewardFailure(name, sample_id, message))
    if count <= _MAX_WARNINGS_PER_FUNCTION:
        logger.warning("reward %r failed on sample %r (scored 0): %s", name, sample_id, message)

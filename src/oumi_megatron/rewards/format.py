"""Format reward: does the completion follow a layout like ``<think>..</think><answer>..</answer>``?

``pattern`` is a Python regex matched against the whitespace-stripped completion, as a whole
(``mode='full'``, default) or anywhere (``mode='search'``). ``.`` also matches newlines.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Any, Literal

THINK_ANSWER_PATTERN = r"<think>.*?</think>\s*<answer>.*?</answer>"


@functools.lru_cache(maxsize=64)
def _compile(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.DOTALL)


def format_reward(
    completions: Sequence[str],
    prompts: Sequence[str] | None = None,
    *,
    pattern: str = THINK_ANSWER_PATTERN,
    mode: Literal["full", "search"] = "full",
    score: float = 1.0,
    **_: Any,
) -> list[float]:
    """``score`` for completions matching ``pattern``, else 0.0."""
    if mode not in ("full", "search"):
        raise ValueError(f"mode must be 'full' or 'search', got {mode!r}")
    regex = _compile(pattern)
    match = regex.fullmatch if mode == "full" else regex.search
    return [score if match(c.strip()) else 0.0 for c in completions]

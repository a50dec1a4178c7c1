"""Reward functions that tests reach through import paths (``_reward_helpers:length_reward``)."""

from __future__ import annotations

from typing import Any


def length_reward(completions: list[str], **kwargs: Any) -> list[float]:
    """Number of characters, scaled by an optional ``scale`` kwarg."""
    return [len(c) * kwargs.get("scale", 1.0) for c in completions]


def answer_only(completions: list[str], answer: list[str]) -> list[float]:
    """No ``**kwargs``: the resolver must pass only ``completions`` and ``answer``."""
    return [1.0 if c == a else 0.0 for c, a in zip(completions, answer, strict=True)]


NOT_CALLABLE = 3

"""Rewards of the demo task ``arithmetic_synthetic`` (see ``oumi_megatron.data.synthetic``).

The task asks "What is a + b?" and expects the completion to *start* with the number. A randomly
initialised tiny model cannot add, so the exact-match reward alone is almost always 0 and GRPO
groups would carry no signal. ``arithmetic_dense`` therefore pays partial credit that a random
policy already earns now and then, and that rises smoothly with each skill the policy picks up:

- ``format_credit`` for starting with an integer at all (a random policy does ~13% of the time),
- ``closeness_credit * max(0, 1 - |answer - target| / scale)`` for being numerically close,
- ``clean_credit`` when nothing but whitespace follows the number (the policy learned to stop).

``arithmetic_exact`` is the plain 0/1 accuracy; give it weight 0 to log it as a metric only.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

# Leading integer, then the rest of the completion (whitespace before the number is allowed).
_LEADING_INT = re.compile(r"\s*([-+]?\d+)(.*)", re.DOTALL)
_MAX_DIGITS = 64  # longer runs are junk, and int() of >4300 digits raises


def parse_leading_int(completion: str) -> tuple[int, str] | None:
    """``(number, rest)`` when the completion starts with an ASCII/Unicode integer, else None."""
    match = _LEADING_INT.match(completion)
    if match is None or len(match.group(1)) > _MAX_DIGITS:
        return None
    return int(match.group(1)), match.group(2)


def arithmetic_dense_score(
    completion: str,
    target: int,
    *,
    format_credit: float = 0.2,
    closeness_credit: float = 0.6,
    clean_credit: float = 0.2,
    scale: float = 10.0,
) -> float:
    """Dense score in [0, format + closeness + clean credit] (1.0 with the defaults)."""
    parsed = parse_leading_int(completion)
    if parsed is None:
        return 0.0
    answer, rest = parsed
    closeness = max(0.0, 1.0 - abs(answer - int(target)) / scale)
    clean = 1.0 if not rest.strip() else 0.0
    return format_credit + closeness_credit * closeness + clean_credit * clean


def arithmetic_dense(
    completions: Sequence[str],
    prompts: Sequence[str] | None = None,
    *,
    target: Sequence[Any],
    format_credit: float = 0.2,
    closeness_credit: float = 0.6,
    clean_credit: float = 0.2,
    scale: float = 10.0,
    **_: Any,
) -> list[float]:
    """Partial-credit reward of the demo task; needs the ``target`` column."""
    return [
        arithmetic_dense_score(
            c,
            int(t),
            format_credit=format_credit,
            closeness_credit=closeness_credit,
            clean_credit=clean_credit,
            scale=scale,
        )
        for c, t in zip(completions, target, strict=True)
    ]


def arithmetic_exact(
    completions: Sequence[str],
    prompts: Sequence[str] | None = None,
    *,
    target: Sequence[Any],
    **_: Any,
) -> list[float]:
    """1.0 when the completion starts with exactly ``target`` (trailing text is ignored)."""
    scores = []
    for completion, t in zip(completions, target, strict=True):
        parsed = parse_leading_int(completion)
        scores.append(1.0 if parsed is not None and parsed[0] == int(t) else 0.0)
    return scores

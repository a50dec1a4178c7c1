r"""GSM8K answer match: the completion's final number equals the reference answer.

The completion's answer is, in order of preference: the number after the last ``####``, the
content of the last ``\boxed{...}``, else the last number in the text. The reference (the
``answer`` column) may be GSM8K's full worked solution ending in ``#### 42`` or just ``42``.
Numbers compare exactly as decimals (``1,000`` == ``1000.0``; no float rounding, so huge
integers that differ in the last digit are different). Text is NFKC-normalised first, so
full-width digits count, and the Unicode minus sign is read as ``-``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

_NUMBER = r"[-+]?(?:\d[\d,]*(?:\.\d+)?|\.\d+)"
_HASHES = re.compile(r"####\s*\$?\s*(" + _NUMBER + ")")
_BOXED = re.compile(r"\\boxed\{\s*\$?\s*(" + _NUMBER + r")\s*\\?%?\s*\}")
_ANY_NUMBER = re.compile(_NUMBER)
_MAX_CHARS = 200  # a number longer than this is junk, not an answer


def _normalise(text: str) -> str:
    return unicodedata.normalize("NFKC", text).replace("\u2212", "-")


def to_decimal(number: str) -> Decimal | None:
    """Parse ``'1,234.50'`` / ``'-7'`` / ``'+3'`` exactly; None if not a finite number."""
    cleaned = number.replace(",", "").strip()
    if not cleaned or len(cleaned) > _MAX_CHARS:
        return None
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def extract_answer(text: str, *, strict: bool = False) -> Decimal | None:
    r"""Final numeric answer of ``text`` (``####`` > ``\boxed{}`` > last number), or None.

    With ``strict`` only the ``####`` form counts, as in GSM8K's reference solutions.
    """
    text = _normalise(text)
    for pattern in (_HASHES, _BOXED) if not strict else (_HASHES,):
        found = pattern.findall(text)
        if found:
            return to_decimal(found[-1])
    if strict:
        return None
    # Skip a trailing sentence dot etc.: candidates are only real numbers.
    for candidate in reversed(_ANY_NUMBER.findall(text)):
        value = to_decimal(candidate)
        if value is not None:
            return value
    return None


def reference_answer(answer: Any) -> Decimal | None:
    """Reference value of an ``answer`` cell: a number, ``'42'`` or a solution ``'... #### 42'``."""
    if isinstance(answer, bool):
        return None
    if isinstance(answer, int | float):
        return to_decimal(repr(answer)) if isinstance(answer, float) else Decimal(answer)
    return extract_answer(str(answer))


def gsm8k_score(
    completion: str, answer: Any, *, strict: bool = False, format_score: float = 0.0
) -> float:
    """1.0 if the answers match, ``format_score`` if the completion has a wrong number, else 0."""
    expected = reference_answer(answer)
    if expected is None:
        raise ValueError(f"reference answer {str(answer)[-80:]!r} has no number")
    predicted = extract_answer(completion, strict=strict)
    if predicted is None:
        return 0.0
    return 1.0 if predicted == expected else format_score


def gsm8k_accuracy(
    completions: Sequence[str],
    prompts: Sequence[str] | None = None,
    *,
    answer: Sequence[Any],
    strict: bool = False,
    format_score: float = 0.0,
    **_: Any,
) -> list[float]:
    """GSM8K exact-answer reward; needs the ``answer`` column."""
    return [
        gsm8k_score(c, a, strict=strict, format_score=format_score)
        for c, a in zip(completions, answer, strict=True)
    ]

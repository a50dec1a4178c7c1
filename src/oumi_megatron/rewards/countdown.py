"""Countdown: reach ``target`` with + - * / over the given ``numbers``, each used at most once.

The equation is the content of the last ``<answer>...</answer>`` of the completion (an
``= result`` suffix is ignored). It is parsed with ``ast`` and evaluated with exact fractions,
so no ``eval`` runs, ``1/3*3`` equals 1, and division by zero simply makes the answer wrong.
Only integer literals, + - * /, unary minus and parentheses are allowed.

Scores: 1.0 for a valid equation equal to the target; ``format_score`` (default 0.1, as in
TinyZero) when an ``<answer>`` tag is present but its equation is invalid, uses unavailable
numbers, or misses the target; 0.0 without an ``<answer>`` tag. ``use_all_numbers=True``
requires every number to be used exactly once (TinyZero's rule).
"""

from __future__ import annotations

import ast
import json
import re
from collections import Counter
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_MAX_EQUATION_CHARS = 200
_MAX_LITERAL = 10**12  # bigger literals are never among the numbers; keeps products cheap
_BINARY = {
    ast.Add: lambda x, y: x + y,
    ast.Sub: lambda x, y: x - y,
    ast.Mult: lambda x, y: x * y,
    ast.Div: lambda x, y: x / y,
}


class InvalidEquation(ValueError):
    """The equation is not a safe arithmetic expression over integer literals."""


def _evaluate(node: ast.AST, used: list[int]) -> Fraction:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        if node.value > _MAX_LITERAL:
            raise InvalidEquation(f"literal {node.value} is too large")
        used.append(node.value)
        return Fraction(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left, used), _evaluate(node.right, used)
        if isinstance(node.op, ast.Div) and right == 0:
            raise InvalidEquation("division by zero")
        return _BINARY[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _evaluate(node.operand, used)
        return -value if isinstance(node.op, ast.USub) else value
    raise InvalidEquation(f"{type(node).__name__} is not allowed")


def evaluate_equation(equation: str) -> tuple[Fraction, list[int]]:
    """Exact value of ``equation`` and the integer literals it uses (in order).

    Raises:
        InvalidEquation: syntax error, disallowed construct, or division by zero.
    """
    equation = equation.split("=", 1)[0].strip().replace("×", "*").replace("÷", "/")
    if not equation or len(equation) > _MAX_EQUATION_CHARS:
        raise InvalidEquation("empty or too long")
    try:
        tree = ast.parse(equation, mode="eval")
    except (SyntaxError, ValueError) as error:  # ValueError: null bytes
        raise InvalidEquation(f"not an expression: {error}") from None
    used: list[int] = []
    return _evaluate(tree.body, used), used


def extract_equation(completion: str) -> str | None:
    """Content of the last ``<answer>...</answer>``, or None."""
    found = _ANSWER.findall(completion)
    return found[-1].strip() if found else None


def _as_numbers(numbers: Any) -> list[int]:
    # Columns stored as JSON text (e.g. a CSV export) are accepted too.
    values = json.loads(numbers) if isinstance(numbers, str) else numbers
    return [int(n) for n in values]


def countdown_score(
    completion: str,
    numbers: Any,
    target: Any,
    *,
    format_score: float = 0.1,
    use_all_numbers: bool = False,
) -> float:
    """Score one completion; see the module docstring."""
    available, goal = Counter(_as_numbers(numbers)), Fraction(int(target))
    equation = extract_equation(completion)
    if equation is None:
        return 0.0
    try:
        value, used = evaluate_equation(equation)
    except InvalidEquation:
        return format_score
    used_counts = Counter(used)
    uses_allowed = used_counts == available if use_all_numbers else used_counts <= available
    return 1.0 if uses_allowed and value == goal else format_score


def countdown_equation(
    completions: Sequence[str],
    prompts: Sequence[str] | None = None,
    *,
    numbers: Sequence[Any],
    target: Sequence[Any],
    format_score: float = 0.1,
    use_all_numbers: bool = False,
    **_: Any,
) -> list[float]:
    """Countdown reward (TRL convention); needs the ``numbers`` and ``target`` columns."""
    return [
        countdown_score(c, n, t, format_score=format_score, use_all_numbers=use_all_numbers)
        for c, n, t in zip(completions, numbers, target, strict=True)
    ]

"""Deterministic synthetic prompt sets: the demo task and countdown puzzles.

Demo task ``arithmetic_synthetic``: "What is a + b? Answer with the number only.", operands in
``[0, max_operand]``, reward ``arithmetic_dense`` (``oumi_megatron.rewards.arithmetic``).
Why this task: a random tiny model (vocab 512, hidden 64, 4 layers) cannot add, but its first
visible token is a digit often enough that ``arithmetic_dense`` (credit for starting with a
number, for being numerically close, for stopping right after it) is non-zero in most groups of
8, so group advantages are non-zero from step 0. The skills it rewards are, in order of
difficulty, "start with a digit", "pick a typical sum", "stop", "read the operands", so the mean
reward climbs quickly before any real arithmetic is learned.

Measured random-policy baseline (``build_tiny_model('llama', dir)``, seed 0, HF ``generate``
at temperature 1.0, top_p 1.0, 8 new tokens; 1024 samples = 128 prompts x 8, max_operand 9):
mean ``arithmetic_dense`` 0.061, ``arithmetic_exact`` 0.008; a digit comes first in 17% of
completions and 79% of the groups of 8 have a non-zero reward spread. A 50-step on-policy
GRPO sanity loop on that model (8 prompts x 8 completions, group-normalised advantages,
AdamW, 2 CPU cores, ~10 s) raised the mean dense reward from 0.09 (step 0) to 0.49 (mean of
the last 10 steps) at lr 3e-4 and to 0.56 at lr 1e-3: first "start with a digit", then
"answer 9-ish"; exact accuracy reaches ~8%, i.e. real addition needs many more steps.
"""

from __future__ import annotations

import itertools
import random
from fractions import Fraction
from typing import Any

ARITHMETIC_PROMPT = "What is {a} {op} {b}? Answer with the number only."


def generate_arithmetic(
    num_examples: int = 1024,
    seed: int = 0,
    max_operand: int = 9,
    ops: str = "+",
) -> list[dict[str, Any]]:
    """Rows ``{id, prompt, a, b, op, target}``; the same arguments always give the same rows.

    ``ops`` is a string of operators among ``+-``; subtraction keeps results non-negative.
    """
    if num_examples < 1 or max_operand < 0:
        raise ValueError("num_examples must be >= 1 and max_operand >= 0")
    if not ops or set(ops) - set("+-"):
        raise ValueError(f"ops must be made of '+' and '-', got {ops!r}")
    rng = random.Random(seed)
    rows = []
    for i in range(num_examples):
        op = rng.choice(ops)
        a, b = rng.randint(0, max_operand), rng.randint(0, max_operand)
        if op == "-" and a < b:
            a, b = b, a
        target = a + b if op == "+" else a - b
        prompt = ARITHMETIC_PROMPT.format(a=a, op=op, b=b)
        rows.append(
            {"id": f"arith-{i:05d}", "prompt": prompt, "a": a, "b": b, "op": op, "target": target}
        )
    return rows


_OPS = {
    "+": lambda x, y: x + y,
    "-": lambda x, y: x - y,
    "*": lambda x, y: x * y,
    "/": lambda x, y: x / y if y != 0 else None,
}


def _expressions(items: list[tuple[Fraction, str]]):
    """All (value, text) reachable by combining every item with + - * / (exact fractions)."""
    if len(items) == 1:
        yield items[0]
        return
    for i, j in itertools.permutations(range(len(items)), 2):
        rest = [items[k] for k in range(len(items)) if k not in (i, j)]
        (x, xs), (y, ys) = items[i], items[j]
        for sym, fn in _OPS.items():
            value = fn(x, y)
            if value is not None:
                yield from _expressions([*rest, (value, f"({xs} {sym} {ys})")])


def solve_countdown(numbers: list[int], target: int) -> str | None:
    """An expression using each number at most once that equals ``target``, or None.

    Tries subsets from largest to smallest, so the answer uses as many numbers as possible.
    """
    for size in range(len(numbers), 0, -1):
        for subset in itertools.combinations(numbers, size):
            for value, text in _expressions([(Fraction(n), str(n)) for n in subset]):
                if value == target:
                    return text[1:-1] if text.startswith("(") else text
    return None


def generate_countdown(
    num_examples: int = 20, seed: int = 0, num_numbers: int = 3, max_number: int = 20
) -> list[dict[str, Any]]:
    """Solvable countdown puzzles ``{id, numbers, target, solution}`` using all numbers."""
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    while len(rows) < num_examples:
        numbers = [rng.randint(1, max_number) for _ in range(num_numbers)]
        # The target comes from a random full expression, so a solution always exists.
        candidates = [v for v, _ in _expressions([(Fraction(n), "") for n in numbers])]
        integral = sorted({int(v) for v in candidates if v.denominator == 1 and 1 <= v <= 100})
        if not integral:
            continue
        target = rng.choice(integral)
        solution = solve_countdown(numbers, target)
        assert solution is not None  # guaranteed by construction
        rows.append(
            {
                "id": f"countdown-{len(rows):03d}",
                "numbers": numbers,
                "target": target,
                "solution": solution,
            }
        )
    return rows

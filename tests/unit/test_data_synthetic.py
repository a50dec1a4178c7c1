"""Shipped samples are correct, synthetic sets are deterministic."""

from __future__ import annotations

import ast
import json
import re
from decimal import Decimal
from fractions import Fraction

import pytest

from oumi_megatron.data.sources import FILES_DIR
from oumi_megatron.data.synthetic import generate_arithmetic, generate_countdown, solve_countdown
from oumi_megatron.rewards.arithmetic import arithmetic_dense, arithmetic_exact
from oumi_megatron.rewards.countdown import countdown_score
from oumi_megatron.rewards.gsm8k import extract_answer, gsm8k_accuracy

# Unit constants a solution may use without them appearing in the question.
_UNIT_CONSTANTS = {Fraction(n) for n in (2, 4, 12, 13, 60, 100)}


def _load(name: str) -> list[dict]:
    return [json.loads(line) for line in (FILES_DIR / name).read_text().splitlines()]


def _calc(expr: str) -> Fraction:
    """Exact value of a GSM8K calculator annotation (+ - * / and parentheses only)."""

    def walk(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return Fraction(str(node.value))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -walk(node.operand)
        if isinstance(node, ast.BinOp):
            ops = {
                ast.Add: "__add__",
                ast.Sub: "__sub__",
                ast.Mult: "__mul__",
                ast.Div: "__truediv__",
            }
            return getattr(walk(node.left), ops[type(node.op)])(walk(node.right))
        raise AssertionError(f"unexpected {ast.dump(node)} in {expr!r}")

    return walk(ast.parse(expr, mode="eval").body)


def test_gsm8k_sample_is_correct() -> None:
    rows = _load("gsm8k_sample.jsonl")
    assert len(rows) == 50 and len({r["question"] for r in rows}) == 50
    for number, row in enumerate(rows, start=1):
        assert set(row) == {"question", "answer"}, number
        answer = row["answer"]
        steps = re.findall(r"<<([^=>]+)=([^>]+)>>([^\s]+)", answer)
        assert steps, f"row {number}: no calculator annotations"
        known = {
            Fraction(n.replace(",", "")) for n in re.findall(r"\d[\d,]*(?:\.\d+)?", row["question"])
        }
        known |= _UNIT_CONSTANTS
        for expr, value, shown in steps:
            assert _calc(expr) == Fraction(value), f"row {number}: {expr} != {value}"
            assert shown.rstrip(".,") == value, f"row {number}: text shows {shown} for {value}"
            # Every operand comes from the question or an earlier step: the chain is consistent.
            for literal in re.findall(r"\d+(?:\.\d+)?", expr):
                assert Fraction(literal) in known, f"row {number}: {literal} in {expr} from nowhere"
            known.add(Fraction(value))
        final = answer.rsplit("\n", 1)[-1]
        assert final == f"#### {steps[-1][1]}", f"row {number}: final line {final!r}"
        assert extract_answer(answer, strict=True) == Decimal(steps[-1][1])
    # The reference solution itself scores 1 with the GSM8K reward.
    assert (
        gsm8k_accuracy([r["answer"] for r in rows], answer=[r["answer"] for r in rows])
        == [1.0] * 50
    )


def test_countdown_sample_matches_generator_and_is_solvable() -> None:
    rows = _load("countdown_sample.jsonl")
    assert rows == generate_countdown(20, seed=0)
    for row in rows:
        assert solve_countdown(row["numbers"], row["target"]) is not None
        completion = f"<answer>{row['solution']}</answer>"
        assert (
            countdown_score(completion, row["numbers"], row["target"], use_all_numbers=True) == 1.0
        )


def test_solver() -> None:
    assert solve_countdown([3, 4], 7) in ("3 + 4", "4 + 3")
    assert solve_countdown([2, 3, 100], 5) in ("2 + 3", "3 + 2")  # a subset when needed
    assert solve_countdown([1, 1], 50) is None


def test_arithmetic_is_deterministic_and_valid() -> None:
    rows = generate_arithmetic(200, seed=5, max_operand=9, ops="+-")
    assert rows == generate_arithmetic(200, seed=5, max_operand=9, ops="+-")
    assert rows != generate_arithmetic(200, seed=6, max_operand=9, ops="+-")
    assert rows[:3] == generate_arithmetic(3, seed=5, max_operand=9, ops="+-")  # prefix-stable
    for row in rows:
        a, b, op, target = row["a"], row["b"], row["op"], row["target"]
        assert target == (a + b if op == "+" else a - b) >= 0
        assert row["prompt"] == f"What is {a} {op} {b}? Answer with the number only."
    targets = [r["target"] for r in rows]
    assert arithmetic_exact([str(t) for t in targets], target=targets) == [1.0] * 200
    assert arithmetic_dense([str(t) for t in targets], target=targets) == pytest.approx([1.0] * 200)
    with pytest.raises(ValueError, match="ops"):
        generate_arithmetic(1, ops="*")

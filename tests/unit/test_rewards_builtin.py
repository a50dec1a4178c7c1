"""Maths of the built-in rewards: GSM8K, countdown, format and the demo task."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest

from oumi_megatron.rewards.arithmetic import arithmetic_dense, arithmetic_exact, parse_leading_int
from oumi_megatron.rewards.countdown import (
    InvalidEquation,
    countdown_equation,
    countdown_score,
    evaluate_equation,
)
from oumi_megatron.rewards.format import format_reward
from oumi_megatron.rewards.gsm8k import extract_answer, gsm8k_accuracy, gsm8k_score

SOLUTION = (
    "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nShe sold 48+24 = <<48+24=72>>72.\n#### 72"
)


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("She sold 72 clips.\n#### 72", 1.0),  # '####' form
        ("so the answer is \\boxed{72}.", 1.0),  # boxed
        ("48 + 24 = 72", 1.0),  # last number
        ("The answer is 72.0", 1.0),  # numeric, not textual, comparison
        ("#### 70\nwait, 72", 0.0),  # '####' wins over a later number
        ("#### 1,234", 0.0),
        ("I don't know", 0.0),  # malformed: no number
        ("", 0.0),
        ("答案是 ７２", 1.0),  # unicode text, full-width digits (NFKC)
        ("The answer is 72 🎉", 1.0),
    ],
)
def test_gsm8k_accuracy_cases(completion: str, expected: float) -> None:
    assert gsm8k_accuracy([completion], answer=[SOLUTION]) == [expected]


def test_gsm8k_reference_forms_and_options() -> None:
    assert gsm8k_score("#### 1,000", "1000") == 1.0
    assert gsm8k_score("#### 1000", 1000) == 1.0
    assert gsm8k_score("#### -9", "... #### -9") == 1.0
    assert gsm8k_score("it is \u22129", "#### -9") == 1.0  # Unicode minus sign
    assert gsm8k_score("#### 7.5", 7.5) == 1.0
    assert gsm8k_score("answer: 71", SOLUTION, format_score=0.1) == 0.1
    assert gsm8k_score("answer: 72", SOLUTION, strict=True) == 0.0  # needs '####'
    with pytest.raises(ValueError, match="has no number"):
        gsm8k_score("#### 1", "no number here")


def test_gsm8k_huge_numbers_compare_exactly() -> None:
    big = "1" + "0" * 30
    assert gsm8k_score(f"#### {big}", big) == 1.0
    assert gsm8k_score(f"#### {big[:-1]}1", big) == 0.0  # float would call these equal
    assert extract_answer("9" * 5000) is None  # junk, and int() of 5000 digits would raise
    assert extract_answer(f"x #### {big}") == Decimal(big)


@pytest.mark.parametrize(
    ("equation", "expected"),
    [
        ("(13 * 2) - 14", 1.0),
        ("13*2-14 = 12", 1.0),  # '= result' suffix ignored
        ("14 - 2", 1.0),  # subset of the numbers is fine by default
        ("13 * 2 - 14 + 0", 0.1),  # 0 is not available
        ("13 * 2 - 14 * 1", 0.1),
        ("14 - 2 - 2 + 2", 0.1),  # 2 used more than once
        ("13 + 14 + 2", 0.1),  # wrong value
        ("14 / (2 - 2)", 0.1),  # division by zero is just wrong
        ("__import__('os').system('x')", 0.1),  # not arithmetic: never evaluated
        ("2 ** 14", 0.1),  # power not allowed
        ("12.0", 0.1),  # float literal not allowed
        ("(13 * 2", 0.1),  # syntax error
        ("", 0.1),
    ],
)
def test_countdown_cases(equation: str, expected: float) -> None:
    completion = f"<think>try</think>\n<answer>{equation}</answer>"
    assert countdown_equation([completion], numbers=[[13, 14, 2]], target=[12]) == [expected]


def test_countdown_format_and_options() -> None:
    assert countdown_score("(13 * 2) - 14", [13, 14, 2], 12) == 0.0  # no <answer> tag
    assert countdown_score("<answer>14 - 2</answer>", [13, 14, 2], 12, use_all_numbers=True) == 0.1
    assert countdown_score("<answer>1</answer><answer>14-2</answer>", "[13, 14, 2]", "12") == 1.0
    assert countdown_score("<answer>(2)/(4)*24</answer>", [2, 4, 24], 12, format_score=0.0) == 1.0
    assert countdown_score("<answer>−14</answer>", [14], -14) == 0.1  # unicode minus: invalid
    assert (
        countdown_score("<answer>1" + "+1" * 300 + "</answer>", [1] * 301, 301) == 0.1
    )  # too long


def test_evaluate_equation_is_exact_and_safe() -> None:
    assert evaluate_equation("1 / 3 * 3") == (Fraction(1), [1, 3, 3])
    assert evaluate_equation("-(2 + 3) * 4")[0] == -20
    for bad in ("7 / 0", "a + 1", "[1][0]", "1 if 1 else 2", "10**100", "1\x00"):
        with pytest.raises(InvalidEquation):
            evaluate_equation(bad)


def test_format_reward() -> None:
    good = "<think>\n2 + 2 = 4\n</think>\n<answer>4</answer>"
    assert format_reward([good, "  " + good + "\n", "<answer>4</answer>", ""]) == [1, 1, 0, 0]
    assert format_reward(["x #### 4"], pattern=r"####\s*\d+", mode="search", score=0.5) == [0.5]
    with pytest.raises(ValueError, match="mode"):
        format_reward(["x"], mode="prefix")  # type: ignore[arg-type]


def test_arithmetic_rewards() -> None:
    completions = ["7", " 7 ", "7 apples", "9", "70", "x7", "", "+7"]
    dense = arithmetic_dense(completions, target=[7] * len(completions))
    assert dense == pytest.approx([1.0, 1.0, 0.8, 0.88, 0.4, 0.0, 0.0, 1.0])
    assert arithmetic_exact(completions, target=[7] * 8) == [1, 1, 1, 0, 0, 0, 0, 1]
    assert arithmetic_dense(["3"], target=["3"], clean_credit=0.0) == pytest.approx([0.8])
    assert parse_leading_int("1" * 65) is None
    assert parse_leading_int("١٢ x") == (12, " x")  # Unicode digits count

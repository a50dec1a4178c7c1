"""docs/troubleshooting.md lists every error message of the code, and is up to date."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
from _scripts import load_script

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def gen():
    name = "gen_troubleshooting"
    try:
        yield load_script(name)
    finally:
        sys.modules.pop(name, None)


@pytest.fixture(scope="module")
def collected(gen):
    return gen.collect()


def test_troubleshooting_doc_is_up_to_date(gen) -> None:
    text = gen.DOC.read_text()
    assert gen.updated(text) == text, "run: python scripts/gen_troubleshooting.py"


def _config_error_calls() -> list[tuple[str, int]]:
    """(path, line) of every ``ConfigError(...)`` built in src (not ``ConfigError.of``)."""
    calls = []
    for path in sorted((ROOT / "src" / "oumi_megatron").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "ConfigError"
            ):
                calls.append((str(path.relative_to(ROOT)), node.lineno))
    return calls


def test_every_config_error_has_an_entry(collected) -> None:
    calls = _config_error_calls()
    assert len(calls) > 50  # the walk found the config layer
    listed = {(s.path, s.lineno) for s in collected.entries + collected.passed_on}
    missing = [f"{path}:{line}" for path, line in calls if (path, line) not in listed]
    assert not missing, f"ConfigError without an entry in docs/troubleshooting.md: {missing}"


def test_every_raised_config_error_is_built_by_a_listed_call(collected) -> None:
    """``raise helper(...)`` of a ConfigError: the helper's own ``ConfigError(...)`` is listed."""
    helpers = {s.function.rsplit(".", 1)[-1] for s in collected.entries if "ConfigError" in s.error}
    builders = {"config_error", "of"}  # ConfigError.of / config_error join listed messages
    for path in sorted((ROOT / "src" / "oumi_megatron").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)):
                continue
            func = node.exc.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            if name.startswith("_") and name not in builders:
                source = path.read_text()
                defined = f"def {name}(" in source
                if defined and "ConfigError(" in _function_source(source, name):
                    assert name in helpers, f"{path}:{node.lineno}: {name} is not listed"


def _function_source(source: str, name: str) -> str:
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return ast.get_source_segment(source, node) or ""
    return ""


def test_entries_split_cause_and_fix(collected) -> None:
    by_text = {(s.where, s.cause): s for s in collected.entries}
    entry = by_text[
        (
            "config.static_checks:_check_grpo",
            "grpo.reward_functions is empty; MEGATRON_GRPO needs at least one reward.",
        )
    ]
    assert entry.error == "ConfigError"
    assert entry.fix.startswith("list registered reward function names")
    # f-string fields are shown as {name}; one-line helpers (_path) are filled in.
    causes = [s.cause for s in collected.entries if s.where.startswith("config.megatron_params")]
    assert any("megatron.virtual_pipeline_model_parallel_size (`{vpp}`)" in c for c in causes)
    # Messages without "Fix:" are kept, as cause only.
    assert any(s.fix is None for s in collected.entries)
    assert "— (cause only)" in (ROOT / "docs" / "troubleshooting.md").read_text()

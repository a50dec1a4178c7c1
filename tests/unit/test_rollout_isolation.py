"""The rollout side must not know Megatron: no import of it anywhere in rollout/."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import oumi_megatron.rollout as rollout

ROLLOUT = Path(rollout.__file__).parent


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_no_megatron_import_in_source():
    offenders = {
        str(path.relative_to(ROLLOUT)): sorted(
            m for m in _imported_modules(path) if "megatron" in m
        )
        for path in ROLLOUT.rglob("*.py")
    }
    # processes and heap: standard-library helpers (process lifetime, garbage collector)
    allowed = ("oumi_megatron.rollout", "oumi_megatron.algorithms", "oumi_megatron.processes",
               "oumi_megatron.heap")  # fmt: skip
    bad = {
        path: [m for m in mods if not m.startswith(allowed)]
        for path, mods in offenders.items()
        if any(not m.startswith(allowed) for m in mods)
    }
    assert not bad, f"rollout/ imports Megatron-side modules: {bad}"


def test_importing_rollout_loads_no_megatron():
    code = (
        "import sys\n"
        "import oumi_megatron.rollout, oumi_megatron.rollout.weight_sync\n"
        "import oumi_megatron.rollout.torch_engine, oumi_megatron.rollout.vllm_engine\n"
        "import oumi_megatron.rollout.logprob_check\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('megatron', 'vllm')]\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]

"""Notebooks are stored valid and clean: no outputs, no execution counts, minimal metadata.

Running them is tests/integration/test_notebooks.py; this only reads the files.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
ALLOWED_METADATA = {"kernelspec", "language_info"}


def _notebooks() -> list[Path]:
    return sorted(NOTEBOOKS.glob("*.ipynb"))


def test_there_are_notebooks() -> None:
    assert _notebooks(), f"no notebooks in {NOTEBOOKS}"


@pytest.mark.parametrize("path", _notebooks(), ids=lambda p: p.stem)
def test_notebook_is_valid_and_has_no_outputs(path: Path) -> None:
    import nbformat

    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert set(nb.metadata) <= ALLOWED_METADATA, f"extra notebook metadata: {set(nb.metadata)}"
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    stored = [i for i, cell in enumerate(code) if cell.outputs or cell.execution_count is not None]
    assert not stored, f"code cells {stored} hold outputs or execution counts: clear them"
    extra = [dict(cell.metadata) for cell in nb.cells if set(cell.metadata) - {"tags"}]
    assert not extra, f"cell metadata beyond tags: {extra}"
    # Each notebook checks something, so that running it in CI can fail.
    tree = ast.parse("\n".join(_python_lines(cell.source) for cell in code))
    assert any(isinstance(node, ast.Assert) for node in ast.walk(tree)), "no assert in any cell"


def test_readme_lists_every_notebook() -> None:
    readme = (NOTEBOOKS / "README.md").read_text()
    missing = [p.name for p in _notebooks() if p.name not in readme]
    assert not missing, f"notebooks/README.md does not describe {missing}"


def _python_lines(source: str) -> str:
    """The cell without IPython's magics and shell escapes (lines starting with % or !)."""
    return "\n".join(
        "" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines()
    )

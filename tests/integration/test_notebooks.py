"""Every notebook in notebooks/ runs top to bottom, as CI runs it.

Each runs in a fresh kernel of this interpreter (a kernelspec written to a temporary
JUPYTER_PATH), with the repository root as working directory. quickstart.ipynb runs first:
reading_metrics.ipynb reads the run it leaves under runs/ (and trains one itself when it is
missing, so each notebook also runs alone). The executed copies land in pytest's tmp dir.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from helpers import REPO

NOTEBOOKS = REPO / "notebooks"
KERNEL = "oumi-megatron-test"
CELL_TIMEOUT_S = 900  # a cell that trains: ~1 min on 2 cores, mostly start-up
# quickstart first (reading_metrics reads its run), reading_metrics last, the rest in between.
ORDER = {"quickstart.ipynb": 0, "reading_metrics.ipynb": 2}


def _notebooks() -> list[Path]:
    return sorted(NOTEBOOKS.glob("*.ipynb"), key=lambda p: (ORDER.get(p.name, 1), p.name))


@pytest.fixture(scope="module")
def kernel_path(tmp_path_factory) -> Path:
    """A JUPYTER_PATH with one kernelspec: this interpreter running ipykernel."""
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    spec_json = {"argv": argv, "display_name": "oumi-megatron (test)", "language": "python"}
    (spec / "kernel.json").write_text(json.dumps(spec_json))
    return root


@pytest.mark.slow
@pytest.mark.parametrize("notebook", _notebooks(), ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(notebook, kernel_path, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("JUPYTER_PATH", str(kernel_path))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    nb = nbformat.read(notebook, as_version=4)
    client = NotebookClient(
        nb,
        kernel_name=KERNEL,
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(REPO)}},
    )
    try:
        client.execute()
    finally:
        nbformat.write(nb, tmp_path / notebook.name)  # executed copy, for a failing run

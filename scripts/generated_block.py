"""The generated block of a hand-written doc page: replace it, or check it is current.

Used by ``gen_config_docs.py`` and ``gen_troubleshooting.py``: each page has a block between
``BEGIN`` and ``END`` markers that its script renders from the code.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path


def updated(text: str, render: Callable[[], str], begin: str, end: str) -> str:
    """``text`` with its block between ``begin`` and ``end`` replaced by ``render()``."""
    start, stop = text.index(begin), text.index(end) + len(end)
    return text[:start] + render() + text[stop:]


def main(argv: list[str], doc: Path, render: Callable[[], str], begin: str, end: str) -> int:
    """Rewrite ``doc``'s block, or with ``--check`` exit 1 when it is stale."""
    text = doc.read_text()
    new = updated(text, render, begin, end)
    if "--check" in argv:
        if new != text:
            print(f"{doc} is stale; run: python {sys.argv[0]}", file=sys.stderr)
            return 1
        return 0
    doc.write_text(new)
    return 0

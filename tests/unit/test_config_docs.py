"""docs/configuration.md's reference tables match the code."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _generator():
    spec = importlib.util.spec_from_file_location(
        "gen_config_docs", ROOT / "scripts" / "gen_config_docs.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_configuration_doc_is_up_to_date() -> None:
    gen = _generator()
    text = gen.DOC.read_text()
    assert gen.updated(text) == text, "run: python scripts/gen_config_docs.py"


def test_every_field_is_documented() -> None:
    gen = _generator()
    block = gen.render()
    for _, model in gen.SECTIONS:
        for field, info in model.model_fields.items():
            assert f"| `{field}` |" in block
            assert info.description, f"{model.__name__}.{field} has no description"

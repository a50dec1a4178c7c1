"""docs/configuration.md's reference tables match the code."""

from __future__ import annotations

from pathlib import Path

from _scripts import load_script

ROOT = Path(__file__).resolve().parents[2]


def _generator():
    return load_script("gen_config_docs")


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

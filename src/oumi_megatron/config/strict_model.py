"""Base class of our pydantic sections: strict types, unknown keys rejected."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator


class StrictModel(BaseModel):
    """Pydantic base for ``megatron:`` / ``grpo:`` and their sub-sections.

    ``strict`` stops silent coercion (``"4"`` is not an int, ``1`` is not a bool);
    YAML and Oumi-style CLI overrides already produce typed values.
    """

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        validate_assignment=True,
        validate_default=True,
        frozen=False,
    )

    @model_validator(mode="before")
    @classmethod
    def _empty_subsection_means_defaults(cls, data: Any) -> Any:
        # `ddp_config:` with nothing after it is None in YAML; treat it as "all defaults"
        # rather than a type error.
        if not isinstance(data, dict):
            return data
        cleaned = dict(data)
        for name, info in cls.model_fields.items():
            annotation = info.annotation
            is_section = isinstance(annotation, type) and issubclass(annotation, StrictModel)
            if is_section and name in cleaned and cleaned[name] is None:
                del cleaned[name]
        return cleaned

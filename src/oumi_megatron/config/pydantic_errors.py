"""Turns pydantic ``ValidationError``s into ``ConfigError``s with dotted paths and fixes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from oumi_megatron.config.errors import ConfigError, unknown_key_error
from oumi_megatron.config.schema import child_path, union_arms


def _model_and_field(
    root: type[BaseModel], loc: tuple[Any, ...]
) -> tuple[type | None, FieldInfo | None]:
    """The model class owning ``loc[-1]`` and that field's info, if ``loc`` goes through models."""
    model: type | None = root
    info: FieldInfo | None = None
    for i, part in enumerate(loc):
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None, None
        info = model.model_fields.get(str(part))
        if info is None or i == len(loc) - 1:
            return model, info
        model = next(
            (
                a
                for a in union_arms(info.annotation)
                if isinstance(a, type) and issubclass(a, BaseModel)
            ),
            None,
        )
    return model, info


def _format(error: Mapping[str, Any], section: str, root: type[BaseModel]) -> str:
    loc = tuple(error["loc"])
    path = section
    for part in loc:
        path = child_path(path, part)
    kind = error["type"]
    if kind == "value_error" and "error" in error.get("ctx", {}):
        # Our own cross-field checks: their message is already complete.
        return str(error["ctx"]["error"])
    model, info = _model_and_field(root, loc)
    if kind == "extra_forbidden" and model is not None and issubclass(model, BaseModel):
        return str(unknown_key_error(path, model.model_fields))
    if kind == "model_type":
        return (
            f"'{path}' must be a mapping of settings, got {error['input']!r}. "
            f"Fix: write it as '{path}: {{key: value, ...}}' or remove it."
        )
    meaning = f" ({info.description})" if info is not None and info.description else ""
    return (
        f"Invalid value for '{path}': {error['input']!r}. {error['msg']}. "
        f"Fix: set '{path}' to a valid value{meaning}."
    )


def config_error(err: ValidationError, section: str, root: type[BaseModel]) -> ConfigError:
    """One ``ConfigError`` for all errors of ``err``, paths prefixed with ``section``."""
    return ConfigError.of([_format(e, section, root) for e in err.errors()])


def validate_section[M: BaseModel](data: Any, model: type[M], section: str) -> M:
    """``model.model_validate(data)`` raising ``ConfigError`` instead of ``ValidationError``."""
    if isinstance(data, model):
        data = data.model_dump()  # Re-run every check, cross-field ones included.
    try:
        return model.model_validate({} if data is None else data)
    except ValidationError as e:
        raise config_error(e, section, model) from e

"""The single error type of the config layer and its message helpers."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from oumi.exceptions import OumiConfigError


class ConfigError(OumiConfigError, ValueError):
    """An invalid configuration; the message names the field, its value and a fix.

    Subclasses ``OumiConfigError`` too, so code (and Oumi's CLI) that already catches
    Oumi's config errors also catches ours.
    """


def closest_match(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate most similar to ``word`` (difflib), or None if nothing is close."""
    matches = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return matches[0] if matches else None


def unknown_key_error(path: str, valid_keys: Iterable[str]) -> ConfigError:
    """Error for an unknown config key, with a did-you-mean suggestion.

    Args:
        path: Full dotted path of the offending key, e.g. ``megatron.tensor_parallel``.
        valid_keys: The keys allowed at that level.
    """
    key = path.rsplit(".", 1)[-1]
    valid = sorted(valid_keys)
    guess = closest_match(key, valid)
    if guess is not None:
        return ConfigError(f"Unknown key '{path}'. Did you mean '{guess}'?")
    return ConfigError(f"Unknown key '{path}'. Valid keys here: {', '.join(valid)}.")

"""The single error type of the config layer and its message helpers."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from oumi.exceptions import OumiConfigError


class ConfigError(OumiConfigError, ValueError):
    """An invalid configuration; the message names the field, its value and a fix.

    Subclasses ``OumiConfigError`` too, so code (and Oumi's CLI) that already catches
    Oumi's config errors also catches ours. ``problems`` lists each problem's message (one,
    unless built by ``ConfigError.of``).
    """

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = list(problems) if problems else [message]

    @classmethod
    def of(cls, problems: list[str]) -> ConfigError:
        """One error reporting every problem, numbered when there are several."""
        if len(problems) == 1:
            return cls(problems[0])
        lines = [f"{len(problems)} problems in the config:"]
        lines += [f"  {i}. " + p.replace("\n", "\n     ") for i, p in enumerate(problems, 1)]
        return cls("\n".join(lines), problems)


class Problems:
    """Runs independent checks, keeps every ``ConfigError`` and raises them together."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def check(self, check, *args, **kwargs):
        """``check(*args, **kwargs)``'s result, or None after recording its ``ConfigError``."""
        try:
            return check(*args, **kwargs)
        except ConfigError as error:
            for message in error.problems:
                self.add(message)
            return None

    def add(self, message: str) -> None:
        if message not in self.messages:  # two checks may meet the same problem
            self.messages.append(message)

    def raise_if_any(self) -> None:
        if self.messages:
            raise ConfigError.of(self.messages)


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

"""Row -> prompt conversion: prompt options, chat messages, templated token ids.

See ``oumi_megatron.data.prompts`` for the options (``dataset_kwargs``) and their defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from oumi_megatron.data.sources import PromptDataError, RawRow

DEFAULT_PROMPT_COLUMNS = ("prompt", "question", "messages")
RESERVED_COLUMNS = frozenset({"completions", "prompts", "completion_ids"})
PROMPT_OPTION_KEYS = frozenset(
    {"prompt_column", "prompt_template", "system_prompt", "apply_chat_template", "id_column"}
    | {"reward_columns", "overlong_prompts"}
)
COUNTDOWN_PROMPT = (
    "Using the numbers {numbers}, create an equation that equals {target}. Use + - * / and "
    "each number at most once. Think in <think> </think> tags, then give the equation in "
    "<answer> </answer> tags, for example <answer>(1 + 2) * 3</answer>."
)
_BUILTIN_OPTIONS: dict[str, dict[str, Any]] = {
    "countdown_sample": {"prompt_template": COUNTDOWN_PROMPT}
}


@dataclass(frozen=True)
class PromptOptions:
    """Prompt options of one dataset; documented in ``oumi_megatron.data.prompts``."""

    prompt_column: str | None = None
    prompt_template: str | None = None
    system_prompt: str | None = None
    apply_chat_template: bool = True
    id_column: str | None = None
    reward_columns: tuple[str, ...] | None = None
    overlong_prompts: Literal["drop", "truncate_left", "error"] = "drop"

    @classmethod
    def split_kwargs(
        cls, name: str, kwargs: dict[str, Any]
    ) -> tuple[PromptOptions, dict[str, Any]]:
        """Prompt options from ``dataset_kwargs`` (over the built-in's defaults), and the rest."""
        merged = {**_BUILTIN_OPTIONS.get(name, {}), **kwargs}
        ours = {k: v for k, v in merged.items() if k in PROMPT_OPTION_KEYS}
        rest = {k: v for k, v in merged.items() if k not in PROMPT_OPTION_KEYS}
        if ours.get("overlong_prompts", "drop") not in ("drop", "truncate_left", "error"):
            raise PromptDataError(
                f"dataset {name!r}: dataset_kwargs.overlong_prompts must be drop, truncate_left "
                f"or error, got {ours['overlong_prompts']!r}"
            )
        if ours.get("reward_columns") is not None:
            ours["reward_columns"] = tuple(ours["reward_columns"])
        return cls(**ours), rest


def check_chat_template(tokenizer: Any, options: PromptOptions) -> None:
    """Fail once, before reading rows, when prompts need a template the tokenizer lacks."""
    if options.apply_chat_template and not getattr(tokenizer, "chat_template", None):
        raise PromptDataError(
            "the tokenizer has no chat template: set model.chat_template, or use string prompts "
            "with dataset_kwargs.apply_chat_template: false"
        )


def columns_list(data: dict[str, Any]) -> str:
    return ", ".join(data) or "none"


def prompt_column(first: RawRow, options: PromptOptions) -> str | None:
    if options.prompt_template is not None:
        return None
    if options.prompt_column is not None:
        return options.prompt_column
    for candidate in DEFAULT_PROMPT_COLUMNS:
        if candidate in first.data:
            return candidate
    raise PromptDataError(
        f"{first.location}: no prompt field; expected one of "
        f"{', '.join(repr(c) for c in DEFAULT_PROMPT_COLUMNS)} (columns: "
        f"{columns_list(first.data)}); set dataset_kwargs.prompt_column or prompt_template"
    )


def _messages(row: RawRow, column: str, value: Any) -> list[dict[str, str]]:
    where = f"{row.location}: field {column!r}"
    if not isinstance(value, list) or not value:
        raise PromptDataError(f"{where} must be a string or a non-empty list of chat messages")
    messages = []
    for i, message in enumerate(value, start=1):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise PromptDataError(f"{where}: message {i} needs a string 'role' and 'content'")
        if not isinstance(message.get("content"), str):
            raise PromptDataError(f"{where}: message {i} has no text 'content'")
        messages.append({"role": message["role"], "content": message["content"]})
    while messages and messages[-1]["role"] == "assistant":
        messages.pop()  # the reference answer; GRPO samples this turn
    if not messages:
        raise PromptDataError(f"{where} has only assistant messages")
    return messages


def _user_text(row: RawRow, column: str | None, options: PromptOptions) -> Any:
    if column is None:
        assert options.prompt_template is not None
        try:
            return options.prompt_template.format(**row.data)
        except KeyError as error:
            raise PromptDataError(
                f"{row.location}: field {error.args[0]!r} (used by dataset_kwargs.prompt_template) "
                f"is missing (columns: {columns_list(row.data)})"
            ) from None
    if column not in row.data:
        raise PromptDataError(
            f"{row.location}: field {column!r} is missing (columns: {columns_list(row.data)}); "
            f"set dataset_kwargs.prompt_column"
        )
    value = row.data[column]
    if value is None or (isinstance(value, str) and not value.strip()):
        raise PromptDataError(f"{row.location}: field {column!r} is empty")
    if not isinstance(value, str | list):
        raise PromptDataError(
            f"{row.location}: field {column!r} must be a string or a list of chat messages, got "
            f"{type(value).__name__}"
        )
    return value


def render(tokenizer: Any, row: RawRow, column: str | None, options: PromptOptions):
    """(ids, text, messages) of one row."""
    value = _user_text(row, column, options)
    if isinstance(value, str) and not options.apply_chat_template:
        text = value if options.system_prompt is None else f"{options.system_prompt}\n{value}"
        return list(tokenizer(text)["input_ids"]), text, None
    if not options.apply_chat_template:
        raise PromptDataError(
            f"{row.location}: field {column!r} holds chat messages, which need the chat "
            f"template; remove dataset_kwargs.apply_chat_template: false"
        )
    if isinstance(value, str):
        messages = [{"role": "user", "content": value}]
    else:
        messages = _messages(row, str(column), value)
    if options.system_prompt is not None and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": options.system_prompt})
    try:
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    except Exception as error:  # template errors (e.g. roles must alternate) name the row
        raise PromptDataError(f"{row.location}: chat template failed: {error}") from error
    # The template already wrote any BOS/special tokens as text; don't add them twice.
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]), text, tuple(messages)


def reward_columns(row: RawRow, column: str | None, options: PromptOptions) -> dict[str, Any]:
    if options.reward_columns is not None:
        missing = [c for c in options.reward_columns if c not in row.data]
        if missing:
            raise PromptDataError(
                f"{row.location}: field {missing[0]!r} (in dataset_kwargs.reward_columns) is "
                f"missing (columns: {columns_list(row.data)})"
            )
        return {c: row.data[c] for c in options.reward_columns}
    columns = {k: v for k, v in row.data.items() if k != column}
    clash = sorted(RESERVED_COLUMNS & columns.keys())
    if clash:
        raise PromptDataError(
            f"{row.location}: field {clash[0]!r} is reserved for reward function arguments; "
            f"rename it or list the fields to keep in dataset_kwargs.reward_columns"
        )
    return columns

"""GRPO prompt datasets: rows -> chat messages -> templated token ids, validated eagerly.

Prompt options, read from (and removed from) each dataset's ``dataset_kwargs``:

- ``prompt_column``: the field holding the prompt; default: the first of ``prompt``,
  ``question``, ``messages`` present in the first row. A string becomes one user message; a
  list of ``{role, content}`` messages is used as is, minus a trailing assistant turn (the
  reference answer: GRPO generates that turn). The other fields become reward ``columns``.
- ``prompt_template``: build the user message as ``template.format(**row)`` instead.
- ``system_prompt``: a system message put first.
- ``apply_chat_template`` (default true): false tokenizes a string prompt as raw text.
- ``id_column`` (default ``id`` when present): sample ids are ``<dataset label>:<id>``, or
  ``<label>:<row number>`` without one.
- ``reward_columns``: keep only these fields as reward columns.
- ``overlong_prompts``: prompts longer than ``max_prompt_length`` tokens are ``drop``-ped
  (default: counted in ``num_dropped`` and logged; an error if all are), ``truncate_left``
  (keep the last tokens, TRL's behaviour) or an ``error``.

Every row is converted at load time, so malformed rows fail before training starts, with
messages like ``gsm8k_sample.jsonl row 17: field 'question' is missing (columns: id,
answer); set dataset_kwargs.prompt_column``.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from oumi_megatron.data.render import (
    PromptOptions,
    check_chat_template,
    prompt_column,
    render,
    reward_columns,
)
from oumi_megatron.data.sources import DatasetSpec, PromptDataError, load_source

logger = logging.getLogger(__name__)

_MAX_REPORTED_ERRORS = 5


@dataclass(frozen=True)
class PromptExample:
    """One prompt: ids for the rollout engine, its text, and the reward columns."""

    sample_id: str
    prompt_ids: tuple[int, ...]
    prompt_text: str  # the rendered prompt (after the chat template), as the model sees it
    messages: tuple[dict[str, str], ...] | None  # None for raw-text prompts
    columns: dict[str, Any] = field(default_factory=dict)


@dataclass
class PromptDataset(Sequence[PromptExample]):
    """Validated prompts of one or more datasets, in file order."""

    examples: list[PromptExample]
    name: str
    num_dropped: int = 0
    num_truncated: int = 0

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> PromptExample:  # type: ignore[override]
        return self.examples[index]

    def __iter__(self) -> Iterator[PromptExample]:
        return iter(self.examples)

    def fingerprint(self) -> str:
        """Hash of ids and tokens: a resumed run checks it still has the same prompts."""
        digest = hashlib.sha256()
        for example in self.examples:
            digest.update(example.sample_id.encode() + b"\0" + repr(example.prompt_ids).encode())
        return digest.hexdigest()[:16]


def build_prompt_dataset(spec: Any, tokenizer: Any, max_prompt_length: int) -> PromptDataset:
    """Load, convert and validate one dataset (``DatasetSpec``, Oumi ``DatasetParams``, or dict).

    Raises:
        PromptDataError: the dataset cannot be read, or rows are malformed (first few listed).
    """
    spec = DatasetSpec.coerce(spec)
    options, extra = PromptOptions.split_kwargs(spec.dataset_name, dict(spec.dataset_kwargs))
    check_chat_template(tokenizer, options)
    source = load_source(spec, extra)
    column = prompt_column(source.rows[0], options)
    id_column = options.id_column or ("id" if "id" in source.rows[0].data else None)
    examples: list[PromptExample] = []
    errors: list[str] = []
    seen: Counter[str] = Counter()
    first_rows: dict[str, int] = {}
    dropped = truncated = 0
    for row in source.rows:
        try:
            ids, text, messages = render(tokenizer, row, column, options)
            columns = reward_columns(row, column, options)
            if id_column is not None and id_column not in row.data:
                raise PromptDataError(f"{row.location}: field {id_column!r} (the id) is missing")
        except PromptDataError as error:
            errors.append(str(error))
            continue
        if len(ids) > max_prompt_length:
            if options.overlong_prompts == "error":
                errors.append(
                    f"{row.location}: prompt has {len(ids)} tokens > max_prompt_length "
                    f"{max_prompt_length}; raise it or set dataset_kwargs.overlong_prompts"
                )
                continue
            if options.overlong_prompts == "drop":
                dropped += 1
                continue
            ids, truncated = ids[-max_prompt_length:], truncated + 1
        raw_id = row.data[id_column] if id_column is not None else row.number
        sample_id = f"{source.label}:{raw_id}"
        first_row = first_rows.setdefault(sample_id, row.number)
        if first_row != row.number:
            errors.append(f"{row.location}: id {raw_id!r} repeats the id of row {first_row}")
            continue
        seen[sample_id] += 1
        if seen[sample_id] > 1:  # sample_count above the size repeats rows
            sample_id = f"{sample_id}#{seen[sample_id]}"
        examples.append(PromptExample(sample_id, tuple(ids), text, messages, columns))
    if errors:
        shown = "\n  ".join(errors[:_MAX_REPORTED_ERRORS])
        more = len(errors) - _MAX_REPORTED_ERRORS
        raise PromptDataError(
            f"{len(errors)} malformed row(s) in {source.label}:\n  {shown}"
            + (f"\n  ... and {more} more" if more > 0 else "")
        )
    if dropped:
        logger.warning(
            "%s: dropped %d of %d prompts longer than max_prompt_length=%d tokens",
            source.label,
            dropped,
            len(source.rows),
            max_prompt_length,
        )
    if not examples:
        raise PromptDataError(
            f"{source.label}: every prompt is longer than max_prompt_length={max_prompt_length} "
            f"tokens; raise grpo.max_prompt_length or set dataset_kwargs.overlong_prompts"
        )
    return PromptDataset(examples, source.label, dropped, truncated)


def load_prompt_datasets(
    specs: Sequence[Any], tokenizer: Any, max_prompt_length: int
) -> PromptDataset:
    """Every entry of ``data.train.datasets``, concatenated in order; sample ids stay unique."""
    if not specs:
        raise PromptDataError("data.train.datasets is empty; MEGATRON_GRPO needs prompts")
    parts = [build_prompt_dataset(s, tokenizer, max_prompt_length) for s in specs]
    labels: Counter[str] = Counter()
    examples: list[PromptExample] = []
    for part in parts:
        labels[part.name] += 1
        if labels[part.name] == 1:
            examples.extend(part.examples)
        else:  # the same label twice (e.g. two train.jsonl): "train:3" -> "train#2:3"
            new_label = f"{part.name}#{labels[part.name]}"
            examples.extend(
                replace(e, sample_id=new_label + e.sample_id[len(part.name) :])
                for e in part.examples
            )
    return PromptDataset(
        examples,
        "+".join(p.name for p in parts),
        sum(p.num_dropped for p in parts),
        sum(p.num_truncated for p in parts),
    )

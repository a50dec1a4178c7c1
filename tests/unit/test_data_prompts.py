"""Rows -> prompts: chat template, prompt options, overlong prompts, malformed-row messages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from oumi_megatron.data.prompts import build_prompt_dataset
from oumi_megatron.data.sources import PromptDataError
from oumi_megatron.testing.tokenizer import build_tokenizer


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return build_tokenizer()


def _jsonl(tmp_path: Path, rows: list[Any], name: str = "data.jsonl") -> str:
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def _load(tmp_path: Path, tokenizer: Any, rows: list[Any], max_len: int = 256, **kwargs: Any):
    spec = {
        "dataset_name": "jsonl",
        "dataset_path": _jsonl(tmp_path, rows),
        "dataset_kwargs": kwargs,
    }
    return build_prompt_dataset(spec, tokenizer, max_len)


def test_chat_template_applied(tmp_path: Path, tokenizer: Any) -> None:
    dataset = _load(tmp_path, tokenizer, [{"prompt": "What is 12 + 7?", "answer": "19"}])
    example = dataset[0]
    expected = "<|im_start|>user\nWhat is 12 + 7?<|im_end|>\n<|im_start|>assistant\n"
    assert example.prompt_text == expected
    assert list(example.prompt_ids) == tokenizer(expected, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(example.prompt_ids) == expected
    assert example.sample_id == "data:1"  # no id column: the row number
    assert example.columns == {"answer": "19"}


def test_messages_system_prompt_and_trailing_assistant(tmp_path: Path, tokenizer: Any) -> None:
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "reference answer"},
    ]
    dataset = _load(tmp_path, tokenizer, [{"messages": messages}], system_prompt="Be brief.")
    assert dataset[0].messages == (
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
    )
    assert "reference answer" not in dataset[0].prompt_text
    assert dataset[0].prompt_text.endswith("<|im_start|>assistant\n")


def test_raw_text_template_and_column_options(tmp_path: Path, tokenizer: Any) -> None:
    rows = [{"uid": 7, "text": "2 + 2 =", "target": 4, "extra": "x"}]
    raw = _load(
        tmp_path,
        tokenizer,
        rows,
        prompt_column="text",
        apply_chat_template=False,
        id_column="uid",
        reward_columns=["target"],
    )
    assert raw[0].prompt_text == "2 + 2 =" and raw[0].messages is None
    assert raw[0].sample_id == "data:7" and raw[0].columns == {"target": 4}
    templated = _load(tmp_path, tokenizer, rows, prompt_template="Compute {text} (answer {target})")
    assert "Compute 2 + 2 = (answer 4)" in templated[0].prompt_text
    assert templated[0].columns["text"] == "2 + 2 ="  # with a template every field is a column


def test_overlong_prompts(tmp_path: Path, tokenizer: Any, caplog: pytest.LogCaptureFixture) -> None:
    rows = [{"prompt": "short"}, {"prompt": "long " * 50}, {"prompt": "tiny"}]
    dropped = _load(tmp_path, tokenizer, rows, max_len=20)
    assert [e.sample_id for e in dropped] == ["data:1", "data:3"] and dropped.num_dropped == 1
    assert "dropped 1 of 3 prompts longer than max_prompt_length=20" in caplog.text
    cut = _load(tmp_path, tokenizer, rows, max_len=20, overlong_prompts="truncate_left")
    assert len(cut) == 3 and cut.num_truncated == 1 and len(cut[1].prompt_ids) == 20
    assert cut[1].prompt_ids == dropped_ids_tail(tokenizer, cut[1].prompt_text, 20)
    with pytest.raises(
        PromptDataError, match="data.jsonl row 2: prompt has .* tokens > max_prompt"
    ):
        _load(tmp_path, tokenizer, rows, max_len=20, overlong_prompts="error")
    with pytest.raises(PromptDataError, match="every prompt is longer than max_prompt_length=3"):
        _load(tmp_path, tokenizer, rows, max_len=3)


def dropped_ids_tail(tokenizer: Any, text: str, n: int) -> tuple[int, ...]:
    return tuple(tokenizer(text, add_special_tokens=False)["input_ids"][-n:])


def test_missing_field_message_names_file_row_and_field(tmp_path: Path, tokenizer: Any) -> None:
    rows: list[Any] = [{"id": i, "question": f"q{i}", "answer": "1"} for i in range(15)]
    rows.insert(16 - 1, "")  # a blank line 16: rows keep their line numbers
    rows.append({"id": 99, "answer": "#### 3"})  # line 17
    path = _jsonl(tmp_path, rows, name="gsm8k_sample.jsonl")
    with pytest.raises(PromptDataError) as info:
        build_prompt_dataset({"dataset_name": "jsonl", "dataset_path": path}, tokenizer, 256)
    assert (
        "gsm8k_sample.jsonl row 17: field 'question' is missing (columns: id, answer); "
        "set dataset_kwargs.prompt_column"
    ) in str(info.value)


@pytest.mark.parametrize(
    ("row", "kwargs", "message"),
    [
        ('{"prompt": "a", ', {}, r"data.jsonl row 1: invalid JSON"),
        ("[1, 2]", {}, r"data.jsonl row 1: expected an object, got list"),
        (
            {"answer": 1},
            {},
            r"row 1: no prompt field; expected one of 'prompt', 'question', 'messages'",
        ),
        ({"prompt": "  "}, {}, r"row 1: field 'prompt' is empty"),
        (
            {"prompt": 5},
            {},
            r"row 1: field 'prompt' must be a string or a list of chat messages, got int",
        ),
        (
            {"messages": [{"role": "user"}]},
            {},
            r"row 1: field 'messages': message 1 has no text 'content'",
        ),
        ({"messages": ["hi"]}, {}, r"field 'messages': message 1 needs a string 'role'"),
        ({"messages": [{"role": "assistant", "content": "x"}]}, {}, r"has only assistant messages"),
        (
            {"prompt": "x"},
            {"prompt_template": "{question}"},
            r"row 1: field 'question' \(used by dataset_kwargs.prompt_template\) is missing "
            r"\(columns: prompt\)",
        ),
        ({"prompt": "x", "prompts": 1}, {}, r"field 'prompts' is reserved"),
        (
            {"prompt": "x"},
            {"reward_columns": ["answer"]},
            r"field 'answer' \(in dataset_kwargs.reward_columns\) is missing",
        ),
        (
            {"prompt": [{"role": "user", "content": "x"}]},
            {"apply_chat_template": False},
            r"need the chat template",
        ),
        (
            {"prompt": "x"},
            {"overlong_prompts": "cut"},
            r"overlong_prompts must be drop, truncate_left or error",
        ),
    ],
)
def test_malformed_rows(
    tmp_path: Path, tokenizer: Any, row: Any, kwargs: dict, message: str
) -> None:
    with pytest.raises(PromptDataError, match=message):
        _load(tmp_path, tokenizer, [row], **kwargs)


def test_errors_are_collected_and_ids_checked(tmp_path: Path, tokenizer: Any) -> None:
    rows = [{"id": 1, "prompt": "ok"}] + [{"id": i, "prompt": ""} for i in range(2, 10)]
    with pytest.raises(PromptDataError, match=r"8 malformed row\(s\) in data:\n(.|\n)*and 3 more"):
        _load(tmp_path, tokenizer, rows)
    with pytest.raises(PromptDataError, match="row 2: id 1 repeats the id of row 1"):
        _load(tmp_path, tokenizer, [{"id": 1, "prompt": "a"}, {"id": 1, "prompt": "b"}])


def test_tokenizer_without_chat_template(tmp_path: Path) -> None:
    plain = build_tokenizer()
    plain.chat_template = None
    with pytest.raises(PromptDataError, match="no chat template"):
        _load(tmp_path, plain, [{"prompt": "x"}])
    assert (
        _load(tmp_path, plain, [{"prompt": "x"}], apply_chat_template=False)[0].prompt_text == "x"
    )

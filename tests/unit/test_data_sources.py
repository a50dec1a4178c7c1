"""Prompt datasets from each source: JSONL, JSON, Parquet, saved HF datasets, built-ins."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from oumi_megatron.data.prompts import build_prompt_dataset, load_prompt_datasets
from oumi_megatron.data.sources import DatasetSpec, PromptDataError, load_source
from oumi_megatron.testing.tokenizer import build_tokenizer

ROWS = [
    {"id": "q1", "question": "What is 2 + 3?", "answer": "#### 5"},
    {"id": "q2", "question": "What is 4 + 4?", "answer": "#### 8"},
    {"id": "q3", "question": "What is 1 + 6?", "answer": "#### 7"},
]


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return build_tokenizer()


def _write(path: Path, fmt: str, rows: list[dict[str, Any]] = ROWS) -> Path:
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif fmt == "json":
        path.write_text(json.dumps(rows))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.mark.parametrize("fmt", ["jsonl", "json", "parquet"])
@pytest.mark.parametrize("by_name", [True, False])
def test_file_formats(tmp_path: Path, tokenizer: Any, fmt: str, by_name: bool) -> None:
    path = _write(tmp_path / f"train.{fmt}", fmt)
    spec = DatasetSpec(dataset_name=fmt if by_name else "my_data", dataset_path=str(path))
    dataset = build_prompt_dataset(spec, tokenizer, max_prompt_length=128)
    assert [e.sample_id for e in dataset] == ["train:q1", "train:q2", "train:q3"]
    assert dataset[0].columns == {"id": "q1", "answer": "#### 5"}
    assert dataset[0].messages == ({"role": "user", "content": "What is 2 + 3?"},)


def test_dataset_name_as_path_and_oumi_like_params(tmp_path: Path, tokenizer: Any) -> None:
    path = _write(tmp_path / "prompts.jsonl", "jsonl")

    class OumiLikeParams:  # duck-typed stand-in for oumi's DatasetParams
        dataset_name = str(path)
        dataset_path = None
        dataset_kwargs = {"prompt_column": "question"}
        split = "train"
        sample_count = 5  # more than the 3 rows: loops, ids stay unique
        shuffle = True
        seed = 3

    dataset = build_prompt_dataset(OumiLikeParams(), tokenizer, 128)
    ids = [e.sample_id for e in dataset]
    assert len(ids) == len(set(ids)) == 5
    assert sorted(i.split("#")[0] for i in ids[:3]) == ["prompts:q1", "prompts:q2", "prompts:q3"]


def test_hf_dataset_saved_to_disk(tmp_path: Path, tokenizer: Any) -> None:
    from datasets import Dataset, DatasetDict

    Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "plain"))
    dataset = build_prompt_dataset(
        {"dataset_name": "local", "dataset_path": str(tmp_path / "plain")}, tokenizer, 128
    )
    assert [e.columns["answer"] for e in dataset] == ["#### 5", "#### 8", "#### 7"]
    assert dataset[0].sample_id == "plain[train]:q1"

    DatasetDict(
        {"train": Dataset.from_list(ROWS), "test": Dataset.from_list(ROWS[:1])}
    ).save_to_disk(str(tmp_path / "dict"))
    spec = {"dataset_name": str(tmp_path / "dict"), "split": "test"}
    assert len(build_prompt_dataset(spec, tokenizer, 128)) == 1
    with pytest.raises(PromptDataError, match=r"no split 'validation' \(splits: train, test\)"):
        load_source(DatasetSpec(str(tmp_path / "dict"), split="validation"))


def test_builtin_datasets(tokenizer: Any) -> None:
    gsm8k = build_prompt_dataset({"dataset_name": "gsm8k_sample"}, tokenizer, 512)
    assert len(gsm8k) == 50 and gsm8k[16].sample_id == "gsm8k_sample:17"
    assert gsm8k[0].columns["answer"].endswith("#### 26")
    countdown = build_prompt_dataset({"dataset_name": "countdown_sample"}, tokenizer, 512)
    assert len(countdown) == 20
    assert (
        "Using the numbers [13, 14, 2], create an equation that equals 12"
        in countdown[0].prompt_text
    )
    assert countdown[0].columns["numbers"] == [13, 14, 2]
    arithmetic = build_prompt_dataset(
        {"dataset_name": "arithmetic_synthetic", "seed": 1, "dataset_kwargs": {"num_examples": 7}},
        tokenizer,
        64,
    )
    assert len(arithmetic) == 7 and "target" in arithmetic[0].columns


def test_concatenation_keeps_ids_unique(tmp_path: Path, tokenizer: Any) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    specs = [
        {
            "dataset_name": "jsonl",
            "dataset_path": str(_write(tmp_path / d / "train.jsonl", "jsonl")),
        }
        for d in "ab"
    ]
    dataset = load_prompt_datasets(specs, tokenizer, 128)
    assert len(dataset) == 6
    assert dataset[3].sample_id == "train#2:q1"
    assert len({e.sample_id for e in dataset}) == 6


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"dataset_name": "jsonl"}, "needs dataset_path"),
        ({"dataset_name": "jsonl", "dataset_path": "/nope.jsonl"}, "does not exist"),
        ({"dataset_name": "gsm8k_sample", "mixture_proportion": 0.5}, "mixture_proportion"),
        ({"dataset_name": "gsm8k_sample", "sample_count": 0}, "sample_count must be >= 1"),
        (
            {"dataset_name": "gsm8k_sample", "dataset_kwargs": {"num_proc": 2}},
            r"unknown dataset_kwargs \['num_proc'\]",
        ),
        (
            {"dataset_name": "arithmetic_synthetic", "dataset_kwargs": {"digits": 2}},
            "arithmetic_synthetic: bad dataset_kwargs",
        ),
        (
            {"dataset_name": "gsm8k_sampel"},
            "Did you mean the built-in 'gsm8k_sample'",
        ),  # not a hub id offline either
    ],
)
def test_source_errors(tokenizer: Any, spec: dict[str, Any], message: str) -> None:
    with pytest.raises(PromptDataError, match=message):
        build_prompt_dataset(spec, tokenizer, 128)

"""Raw rows of a prompt dataset, each with its location for error messages.

How an Oumi ``DatasetParams`` entry of ``data.train.datasets`` maps to a source:

================================  =================  ===========================================
``dataset_name``                  ``dataset_path``   rows from
================================  =================  ===========================================
``gsm8k_sample``                  unset              shipped ``files/gsm8k_sample.jsonl`` (50)
``countdown_sample``              unset              shipped ``files/countdown_sample.jsonl`` (20)
``arithmetic_synthetic``          unset              ``synthetic.generate_arithmetic`` (demo task)
``jsonl`` / ``json`` / ``parquet``  a file (needed)  that file, in that format
an Oumi GRPO dataset name        either             Oumi's registered class (``oumi_datasets``)
(``openai/gsm8k``, ...)
anything                          ``*.jsonl`` etc.   that file (format from the extension)
anything                          a saved dataset    ``datasets.load_from_disk`` (+ ``split``)
anything                          other directory    ``datasets.load_dataset(path, subset)``
an existing local path            unset              as if it were ``dataset_path``
a Hub id (e.g. ``allenai/c4``)    unset              ``datasets.load_dataset(name, subset)``
================================  =================  ===========================================

``split`` selects the split of HF datasets (files have none; it is ignored). ``subset`` is the
HF config name. ``shuffle`` (with ``seed``, 0 if unset) then ``sample_count`` are applied after
loading; a ``sample_count`` above the size loops over the rows again, as in Oumi.
``mixture_proportion`` is not supported: datasets are concatenated. ``dataset_kwargs`` holds
prompt options (``prompts.PROMPT_OPTION_KEYS``); the rest goes to ``load_dataset`` (HF),
to the generator (``arithmetic_synthetic``: ``num_examples``, ``max_operand``, ``ops``), and is
an error for files. Row numbers are 1-based; for JSONL they are line numbers.
"""

from __future__ import annotations

import difflib
import json
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FILES_DIR = Path(__file__).resolve().parent / "files"
SHIPPED_FILES = {"gsm8k_sample": "gsm8k_sample.jsonl", "countdown_sample": "countdown_sample.jsonl"}
SYNTHETIC = ("arithmetic_synthetic",)
BUILTIN_DATASETS = (*SHIPPED_FILES, *SYNTHETIC)
FILE_FORMATS = {".jsonl": "jsonl", ".json": "json", ".parquet": "parquet"}


class PromptDataError(ValueError):
    """A dataset that cannot be loaded or a malformed row; the message names where."""


@dataclass(frozen=True)
class DatasetSpec:
    """The fields of Oumi's ``DatasetParams`` that prompt loading uses (duck-typed copy)."""

    dataset_name: str
    dataset_path: str | None = None
    subset: str | None = None
    split: str = "train"
    dataset_kwargs: Mapping[str, Any] = field(default_factory=dict)
    sample_count: int | None = None
    shuffle: bool = False
    seed: int | None = None
    mixture_proportion: float | None = None

    @classmethod
    def coerce(cls, params: Any) -> DatasetSpec:
        """From a ``DatasetSpec``, an Oumi ``DatasetParams``, or a mapping of its fields."""
        if isinstance(params, DatasetSpec):
            return params
        get: Callable[[str, Any], Any]
        if isinstance(params, Mapping):
            get = params.get
        else:

            def get(name: str, default: Any) -> Any:
                return getattr(params, name, default)

        return cls(
            dataset_name=str(get("dataset_name", "")),
            dataset_path=get("dataset_path", None),
            subset=get("subset", None),
            split=get("split", "train") or "train",
            dataset_kwargs=dict(get("dataset_kwargs", None) or {}),
            sample_count=get("sample_count", None),
            shuffle=bool(get("shuffle", False)),
            seed=get("seed", None),
            mixture_proportion=get("mixture_proportion", None),
        )


@dataclass(frozen=True)
class RawRow:
    """One row as read, with ``number`` (1-based row or line) and ``location`` for messages."""

    number: int
    location: str
    data: dict[str, Any]


@dataclass
class RowSource:
    """Rows of one dataset; ``label`` names it in messages and sample ids."""

    label: str
    rows: list[RawRow]


def _rows(label: str, records: Any) -> list[RawRow]:
    rows = []
    for i, record in enumerate(records, start=1):
        if not isinstance(record, Mapping):
            raise PromptDataError(
                f"{label} row {i}: expected an object, got {type(record).__name__}"
            )
        rows.append(RawRow(i, f"{label} row {i}", dict(record)))
    return rows


def _read_jsonl(path: Path) -> list[RawRow]:
    rows = []
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path.name} row {line_number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise PromptDataError(f"{where}: invalid JSON ({error})") from None
            if not isinstance(record, dict):
                raise PromptDataError(f"{where}: expected an object, got {type(record).__name__}")
            rows.append(RawRow(line_number, where, record))
    return rows


def _read_file(path: Path, fmt: str) -> list[RawRow]:
    if not path.is_file():
        raise PromptDataError(f"dataset file {str(path)!r} does not exist")
    if fmt == "jsonl":
        return _read_jsonl(path)
    if fmt == "json":
        try:
            records = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise PromptDataError(f"{path.name}: invalid JSON ({error})") from None
        if isinstance(records, dict) and isinstance(records.get("data"), list):
            records = records["data"]  # the {"data": [...]} layout that HF's json loader reads
        if not isinstance(records, list):
            raise PromptDataError(f"{path.name}: expected a JSON list of objects")
        return _rows(path.name, records)
    import pyarrow.parquet as pq  # a dependency of `datasets`

    return _rows(path.name, pq.read_table(path).to_pylist())


def _hf_rows(label: str, dataset: Any, split: str) -> list[RawRow]:
    from datasets import DatasetDict, IterableDatasetDict

    if isinstance(dataset, DatasetDict | IterableDatasetDict):
        if split not in dataset:
            raise PromptDataError(f"{label}: no split {split!r} (splits: {', '.join(dataset)})")
        dataset = dataset[split]
    return _rows(label, dataset)


def _load_hf(spec: DatasetSpec, path_or_name: str, extra: dict[str, Any]) -> RowSource:
    import datasets

    path = Path(path_or_name)
    is_saved = path.is_dir() and any(
        (path / f).exists() for f in ("dataset_info.json", "state.json", "dataset_dict.json")
    )
    label = f"{path.name if path.exists() else path_or_name}[{spec.split}]"
    try:
        if is_saved:
            loaded = datasets.load_from_disk(str(path), **extra)
            return RowSource(label, _hf_rows(label, loaded, spec.split))
        loaded = datasets.load_dataset(path_or_name, spec.subset, split=spec.split, **extra)
    except PromptDataError:
        raise
    except Exception as error:  # offline hub, unknown id, bad kwargs: say what was tried
        hint = difflib.get_close_matches(spec.dataset_name, BUILTIN_DATASETS, n=1, cutoff=0.6)
        did_you_mean = f" Did you mean the built-in {hint[0]!r}?" if hint else ""
        raise PromptDataError(
            f"cannot load dataset {path_or_name!r} (split {spec.split!r}) with the `datasets` "
            f"library: {type(error).__name__}: {error}.{did_you_mean} Built-in datasets: "
            f"{', '.join(BUILTIN_DATASETS)}; local files: set dataset_path to a .jsonl/.json/"
            f".parquet file."
        ) from error
    return RowSource(label, _hf_rows(label, loaded, spec.split))


def _registered_grpo_class(spec: DatasetSpec) -> type | None:
    if Path(spec.dataset_name).exists():  # a local path, not a registered name
        return None
    from oumi_megatron.data.oumi_datasets import registered_grpo_class

    return registered_grpo_class(spec.dataset_name, spec.subset)


def _load_registered(oumi_class: type, spec: DatasetSpec, extra: dict[str, Any]) -> RowSource:
    from oumi_megatron.data.oumi_datasets import read_registered

    label = f"{spec.dataset_name}[{spec.split}]"
    try:
        records = read_registered(oumi_class, spec, extra)
    except Exception as error:  # offline hub, missing file, bad kwargs: say what was tried
        where = spec.dataset_path or "the Hugging Face Hub"
        raise PromptDataError(
            f"cannot load dataset {spec.dataset_name!r} (split {spec.split!r}) with Oumi's "
            f"registered {oumi_class.__name__} from {where}: {type(error).__name__}: {error}. "
            f"Fix: set dataset_path to a local copy of it, or check dataset_kwargs."
        ) from error
    return RowSource(label, _rows(label, records))


def _no_extra(label: str, extra: Mapping[str, Any]) -> None:
    if extra:
        raise PromptDataError(f"{label}: unknown dataset_kwargs {sorted(extra)} for a file dataset")


def load_source(spec: DatasetSpec, extra_kwargs: Mapping[str, Any] | None = None) -> RowSource:
    """Rows of ``spec`` (see the module docstring); ``extra_kwargs``: its non-prompt kwargs."""
    extra = dict(extra_kwargs or {})
    name, path = spec.dataset_name, spec.dataset_path
    if spec.mixture_proportion is not None:
        raise PromptDataError(
            f"dataset {name!r}: mixture_proportion is not supported by MEGATRON_GRPO; datasets "
            f"are concatenated. Fix: remove it (use sample_count to balance)."
        )
    if path is None and name in SHIPPED_FILES:
        path, name = str(FILES_DIR / SHIPPED_FILES[name]), "jsonl"
    if path is None and name == "arithmetic_synthetic":
        from oumi_megatron.data.synthetic import generate_arithmetic

        try:
            records = generate_arithmetic(seed=spec.seed or 0, **extra)
        except TypeError as error:
            raise PromptDataError(f"arithmetic_synthetic: bad dataset_kwargs ({error})") from None
        source = RowSource(name, _rows(name, records))
    elif name in FILE_FORMATS.values():
        if path is None:
            raise PromptDataError(f"dataset_name {name!r} needs dataset_path (the file to read)")
        _no_extra(Path(path).name, extra)
        source = RowSource(Path(path).stem, _read_file(Path(path), name))
    elif (oumi_class := _registered_grpo_class(spec)) is not None:
        source = _load_registered(oumi_class, spec, extra)
    else:
        target = path if path is not None else name
        fmt = FILE_FORMATS.get(Path(target).suffix.lower())
        if fmt is not None and not Path(target).is_dir():
            _no_extra(Path(target).name, extra)
            source = RowSource(Path(target).stem, _read_file(Path(target), fmt))
        else:
            source = _load_hf(spec, target, extra)
    if not source.rows:
        raise PromptDataError(f"dataset {source.label!r} has no rows")
    return RowSource(source.label, _sample(source.rows, spec))


def _sample(rows: list[RawRow], spec: DatasetSpec) -> list[RawRow]:
    if spec.shuffle:
        rows = rows.copy()
        random.Random(spec.seed or 0).shuffle(rows)
    if spec.sample_count is None:
        return rows
    if spec.sample_count < 1:
        raise PromptDataError(f"dataset {spec.dataset_name!r}: sample_count must be >= 1")
    return [rows[i % len(rows)] for i in range(spec.sample_count)]

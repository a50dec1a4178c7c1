"""MetricsLogger: JSONL records, TensorBoard scalars, wandb offline run, non-main ranks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from oumi_megatron.metrics import MetricsLogger


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_jsonl_one_record_per_step(tmp_path: Path) -> None:
    with MetricsLogger(tmp_path, "r") as ml:
        ml.log(1, {"loss": 0.5, "reward/mean": torch.tensor(0.25), "n": 3})
        ml.log(2, {"loss": 0.25})
    recs = _records(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in recs] == [1, 2]
    assert recs[0]["loss"] == 0.5 and recs[0]["reward/mean"] == 0.25 and recs[0]["n"] == 3.0
    assert all(isinstance(r["time"], float) and r["time"] > 0 for r in recs)


def test_jsonl_non_finite_is_null_and_file_appends(tmp_path: Path) -> None:
    with MetricsLogger(tmp_path) as ml:
        ml.log(1, {"a": math.nan, "b": math.inf, "c": -math.inf, "d": 1.0})
    with MetricsLogger(tmp_path) as ml:  # resumed run: same file, new lines.
        ml.log(2, {"d": 2.0})
    text = (tmp_path / "metrics.jsonl").read_text()
    assert "NaN" not in text and "Infinity" not in text
    recs = _records(tmp_path / "metrics.jsonl")
    assert recs[0]["a"] is None and recs[0]["b"] is None and recs[0]["c"] is None
    assert [r["step"] for r in recs] == [1, 2]


def test_non_numeric_metric_is_a_clear_error(tmp_path: Path) -> None:
    with MetricsLogger(tmp_path) as ml, pytest.raises(TypeError, match="'name'"):
        ml.log(1, {"name": "abc"})


def test_non_main_process_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    ml = MetricsLogger(out, enable_tensorboard=True, enable_wandb=True, is_main_process=False)
    ml.log(1, {"loss": 1.0})
    ml.close()
    assert not out.exists()
    assert ml.wandb_run is None and ml.tensorboard_dir is None


def test_close_is_idempotent_and_later_logs_are_ignored(tmp_path: Path) -> None:
    ml = MetricsLogger(tmp_path)
    ml.close()
    ml.close()
    ml.log(1, {"loss": 1.0})
    assert (tmp_path / "metrics.jsonl").read_text() == ""


def test_tensorboard_scalars_read_back(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with MetricsLogger(
        tmp_path, enable_jsonl=False, enable_tensorboard=True, config={"lr": 1e-6}
    ) as ml:
        ml.log(1, {"loss": 0.5})
        ml.log(2, {"loss": 0.25, "reward/mean": 1.0})
        tb_dir = ml.tensorboard_dir
    assert tb_dir == tmp_path / "tensorboard"
    assert not (tmp_path / "metrics.jsonl").exists()
    acc = EventAccumulator(str(tb_dir))
    acc.Reload()
    assert {"loss", "reward/mean"} <= set(acc.Tags()["scalars"])
    assert [(e.step, e.value) for e in acc.Scalars("loss")] == [(1, 0.5), (2, 0.25)]


def test_tensorboard_logging_dir_override(tmp_path: Path) -> None:
    with MetricsLogger(
        tmp_path / "out", enable_tensorboard=True, logging_dir=tmp_path / "tb"
    ) as ml:
        ml.log(1, {"x": 1.0})
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))


def test_wandb_offline_run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_ERROR_REPORTING", "false")
    with MetricsLogger(
        tmp_path, "unit", enable_wandb=True, wandb_project="p", config={"lr": 1e-6}
    ) as ml:
        assert ml.wandb_run is not None
        ml.log(1, {"loss": 0.5})
        ml.log(2, {"loss": math.nan})
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert list(runs[0].glob("*.wandb"))

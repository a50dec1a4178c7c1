"""Checks of ``data:`` that need no model and read no rows: run before any work starts."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from oumi_megatron.config.errors import ConfigError

if TYPE_CHECKING:
    from oumi_megatron.config.training_config import MegatronTrainingConfig


def _split_problems(cfg: MegatronTrainingConfig, split: str) -> list[str]:
    params = getattr(cfg.data, split)
    problems = []
    for i, dataset in enumerate(params.datasets):
        where = f"data.{split}.datasets[{i}]"
        path = dataset.dataset_path
        if path is not None and not Path(path).expanduser().exists():
            problems.append(
                f"{where}.dataset_path ({path!r}) does not exist (relative paths are from "
                f"{Path.cwd()}). Fix: point it at a .jsonl/.json/.parquet file or dataset dir."
            )
    return problems


def check_data(cfg: MegatronTrainingConfig) -> None:
    """The training and validation datasets' files exist (unused Oumi data options:
    ``oumi_fields.py``)."""
    problems = _split_problems(cfg, "train") + _split_problems(cfg, "validation")
    if not cfg.data.train.datasets:
        problems.append(
            "data.train.datasets is empty. Fix: list at least one prompt dataset (a shipped "
            "name such as arithmetic_synthetic, or dataset_path to a .jsonl file)."
        )
    if problems:
        raise ConfigError.of(problems)

"""Checks of ``data:`` that need no model and read no rows: run before any work starts."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from oumi_megatron.config.errors import ConfigError

if TYPE_CHECKING:
    from oumi_megatron.config.training_config import MegatronTrainingConfig


def _split_problems(cfg: MegatronTrainingConfig, split: str) -> list[str]:
    from oumi.core.configs.params.data_params import DatasetSplitParams

    params = getattr(cfg.data, split)
    problems = []
    default = DatasetSplitParams()
    for name in ("mixture_strategy", "pack", "stream", "collator_name"):
        value = getattr(params, name)
        if value != getattr(default, name):
            problems.append(
                f"data.{split}.{name} ({value!r}) is not used by Megatron trainers: datasets "
                f"are concatenated and sequences packed by megatron.enable_sequence_packing. "
                f"Fix: remove it."
            )
    for i, dataset in enumerate(params.datasets):
        where = f"data.{split}.datasets[{i}]"
        if dataset.mixture_proportion is not None:
            problems.append(
                f"{where}.mixture_proportion ({dataset.mixture_proportion}) is not supported: "
                f"datasets are concatenated. Fix: remove it (use sample_count to balance)."
            )
        path = dataset.dataset_path
        if path is not None and not Path(path).expanduser().exists():
            problems.append(
                f"{where}.dataset_path ({path!r}) does not exist (relative paths are from "
                f"{Path.cwd()}). Fix: point it at a .jsonl/.json/.parquet file or dataset dir."
            )
    return problems


def check_data(cfg: MegatronTrainingConfig) -> None:
    """Dataset files exist; Oumi data options the trainers do not use are refused."""
    problems = _split_problems(cfg, "train")
    if not cfg.data.train.datasets:
        problems.append(
            "data.train.datasets is empty. Fix: list at least one prompt dataset (a shipped "
            "name such as arithmetic_synthetic, or dataset_path to a .jsonl file)."
        )
    for split in ("validation", "test"):
        if getattr(cfg.data, split).datasets or _split_problems(cfg, split):
            problems += _split_problems(cfg, split)
    if problems:
        raise ConfigError.of(problems)

"""One metrics logger for the whole trainer: JSONL, TensorBoard and Weights & Biases.

Only the main process writes; on other ranks every method is a no-op, so call sites never
need ``if rank == 0`` guards. TensorBoard and wandb are imported lazily (only when enabled).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

_WANDB_MODES = ("online", "offline", "disabled", "shared")


def _to_float(name: str, value: Any) -> float:
    """Python float of a number, bool, numpy scalar or one-element tensor."""
    if hasattr(value, "item"):  # torch / numpy scalars; .item() also moves off the GPU.
        value = value.item()
    try:
        return float(value)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"metric {name!r} must be a number, got {type(value).__name__}: {value!r}"
        ) from error


def wandb_mode_from_env() -> str | None:
    """``WANDB_MODE`` if it names a wandb mode (``offline`` works with no network), else None."""
    mode = os.environ.get("WANDB_MODE", "").strip().lower()
    if mode == "dryrun":  # Legacy spelling wandb still accepts.
        return "offline"
    return mode if mode in _WANDB_MODES else None


class MetricsLogger:
    """Writes scalar metrics per step to ``metrics.jsonl``, TensorBoard and/or wandb.

    Args:
        output_dir: run directory; ``metrics.jsonl`` goes here, TensorBoard events under
            ``output_dir/tensorboard`` (or ``logging_dir``), wandb files under ``output_dir/wandb``.
        run_name: run name shown in wandb.
        enable_jsonl / enable_tensorboard / enable_wandb: which sinks to open.
        wandb_project: wandb project (None lets wandb pick its default / ``WANDB_PROJECT``).
        config: run configuration, stored in wandb and as TensorBoard text.
        is_main_process: False on every rank but global rank 0: nothing is written.
        logging_dir: TensorBoard directory override (Oumi's ``training.logging_dir``).
        wandb_mode: ``online``/``offline``/``disabled``; None reads ``WANDB_MODE``.
    """

    def __init__(
        self,
        output_dir: str | Path,
        run_name: str = "run",
        *,
        enable_jsonl: bool = True,
        enable_tensorboard: bool = False,
        enable_wandb: bool = False,
        wandb_project: str | None = None,
        config: Mapping[str, Any] | None = None,
        is_main_process: bool = True,
        logging_dir: str | Path | None = None,
        wandb_mode: str | None = None,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.run_name = run_name
        self.is_main_process = is_main_process
        self.jsonl_path: Path | None = None
        self._jsonl = None
        self._tb = None
        self._wandb_run = None
        self._closed = False
        if not is_main_process:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        if enable_jsonl:
            self.jsonl_path = self.output_dir / "metrics.jsonl"
            # Append: a resumed run continues the same file; each line carries its step.
            self._jsonl = self.jsonl_path.open("a", encoding="utf-8")
        if enable_tensorboard:
            self._open_tensorboard(logging_dir, config)
        if enable_wandb:
            self._open_wandb(wandb_project, config, wandb_mode)

    def _open_tensorboard(self, logging_dir: str | Path | None, config: Any) -> None:
        from torch.utils.tensorboard import SummaryWriter

        tb_dir = Path(logging_dir) if logging_dir is not None else self.output_dir / "tensorboard"
        self._tb = SummaryWriter(log_dir=str(tb_dir))
        if config:
            text = json.dumps(dict(config), indent=2, default=str)
            self._tb.add_text("config", f"```\n{text}\n```", global_step=0)

    def _open_wandb(self, project: str | None, config: Any, mode: str | None) -> None:
        import wandb

        mode = mode or wandb_mode_from_env()
        self._wandb_run = wandb.init(
            project=project,
            name=self.run_name,
            dir=str(self.output_dir),
            config=dict(config) if config else None,
            mode=mode,
            # Several loggers in one process (tests, sweeps) must not share one run.
            reinit="create_new",
        )

    @property
    def tensorboard_dir(self) -> Path | None:
        """Directory of the TensorBoard event files (None when TensorBoard is off)."""
        return Path(self._tb.log_dir) if self._tb is not None else None

    @property
    def wandb_run(self) -> Any:
        """The wandb ``Run`` (None when wandb is off or on non-main ranks)."""
        return self._wandb_run

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Record ``metrics`` (name -> scalar) for optimizer ``step`` in every open sink.

        Non-finite values become ``null`` in JSONL (strict JSON has no NaN/Infinity); TensorBoard
        and wandb receive them unchanged since both render NaN/inf.
        """
        if not self.is_main_process or self._closed:
            return
        values = {name: _to_float(name, value) for name, value in metrics.items()}
        if self._jsonl is not None:
            record: dict[str, Any] = {"step": int(step), "time": time.time()}
            record.update({k: (v if math.isfinite(v) else None) for k, v in values.items()})
            self._jsonl.write(json.dumps(record, allow_nan=False) + "\n")
            self._jsonl.flush()  # A crashed run keeps every step logged so far.
        if self._tb is not None:
            for name, value in values.items():
                self._tb.add_scalar(name, value, global_step=step)
            self._tb.flush()
        if self._wandb_run is not None:
            self._wandb_run.log(values, step=int(step))

    def close(self) -> None:
        """Flush and close every sink (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._jsonl is not None:
            self._jsonl.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb_run is not None:
            self._wandb_run.finish()

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def truncate_history(jsonl: Path, before_step: int) -> None:
    """Keep the rows of steps before `before_step` (0 = a fresh run keeps nothing)."""
    rows = [line for line in jsonl.read_text().splitlines() if line]
    kept = [line for line in rows if json.loads(line).get("step", 0) < before_step]
    jsonl.write_text("".join(line + "\n" for line in kept))

"""The training progress reporter: a rich bar on a terminal, one log line per step elsewhere."""

from __future__ import annotations

import datetime
import logging
import math
import os
import time
from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

logger = logging.getLogger(__name__)


def interactive_console(console: Console) -> bool:
    """True on an interactive terminal outside CI (live bars garble CI logs and pipes)."""
    in_ci = os.environ.get("CI", "").lower() not in ("", "0", "false")
    return console.is_terminal and not console.is_dumb_terminal and not in_ci


def _fmt(value: Any, spec: str) -> str:
    value = float(value.item() if hasattr(value, "item") else value)
    return format(value, spec) if math.isfinite(value) else str(value)


class TrainingProgress:
    """Progress of optimizer steps: step/total, reward mean and step time.

    On the main process with an interactive terminal it draws a rich progress bar; otherwise
    (pipes, CI, ``enabled=False``) it logs one concise line every ``log_every`` steps and at the
    last step. Non-main ranks print nothing.

    Args:
        total_steps: steps of the whole run.
        initial_step: steps already done (resumed run).
        is_main_process: False on every rank but global rank 0.
        enabled: force the bar on/off; None = only on an interactive terminal outside CI.
        log_every: steps between log lines when the bar is off.
        reward_key / step_time_key: metric names shown.
        console: rich console (tests pass one writing to a buffer); default stderr.
    """

    def __init__(
        self,
        total_steps: int,
        *,
        initial_step: int = 0,
        is_main_process: bool = True,
        enabled: bool | None = None,
        log_every: int = 1,
        reward_key: str = "reward/mean",
        step_time_key: str = "time/step",
        console: Console | None = None,
    ) -> None:
        if log_every < 1:
            raise ValueError(f"log_every must be >= 1, got {log_every}")
        self.total_steps = total_steps
        self.log_every = log_every
        self.reward_key = reward_key
        self.step_time_key = step_time_key
        self.is_main_process = is_main_process
        self._start_step = initial_step
        self._start_time = time.monotonic()
        self._progress: Progress | None = None
        if not is_main_process:
            return
        console = console or Console(stderr=True)
        use_bar = interactive_console(console) if enabled is None else enabled
        if use_bar:
            # auto_refresh=False: no refresh thread; the bar redraws on each update.
            self._progress = Progress(
                TextColumn("[bold]train"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=console,
                auto_refresh=False,
            )
            self._task = self._progress.add_task(
                "train", total=total_steps, completed=initial_step, info=""
            )
            self._progress.start()

    @property
    def uses_bar(self) -> bool:
        """Whether the rich bar is drawn (False: line logging or non-main rank)."""
        return self._progress is not None

    def describe(self, metrics: Mapping[str, Any]) -> str:
        """Short status text: reward mean and step time."""
        parts = []
        if self.reward_key in metrics:
            parts.append(f"reward {_fmt(metrics[self.reward_key], '.4f')}")
        if self.step_time_key in metrics:
            parts.append(f"{_fmt(metrics[self.step_time_key], '.2f')} s/step")
        return " | ".join(parts)

    def _eta(self, step: int) -> str | None:
        done = step - self._start_step
        if done <= 0 or step >= self.total_steps:
            return None
        per_step = (time.monotonic() - self._start_time) / done
        return str(datetime.timedelta(seconds=round(per_step * (self.total_steps - step))))

    def update(self, step: int, metrics: Mapping[str, Any] | None = None) -> None:
        """Report that ``step`` optimizer steps are done (1-based), with that step's metrics."""
        if not self.is_main_process:
            return
        info = self.describe(metrics or {})
        if self._progress is not None:
            self._progress.update(self._task, completed=step, info=info, refresh=True)
            return
        if step % self.log_every and step != self.total_steps:
            return
        line = f"step {step}/{self.total_steps}"
        if info:
            line += f" | {info}"
        if eta := self._eta(step):
            line += f" | eta {eta}"
        logger.info(line)

    def close(self) -> None:
        """Stop the bar (leaves the final state on screen); idempotent."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def __enter__(self) -> TrainingProgress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

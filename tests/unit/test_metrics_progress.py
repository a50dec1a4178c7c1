"""TrainingProgress: rich bar on a terminal, one log line per logging step otherwise."""

from __future__ import annotations

import io
import logging

import pytest
from rich.console import Console

from oumi_megatron.metrics import TrainingProgress, interactive_console

LOGGER = "oumi_megatron.metrics.progress"


def _plain_console() -> Console:
    return Console(file=io.StringIO(), force_terminal=False)


def test_non_tty_logs_one_line_per_logging_step(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    with TrainingProgress(5, log_every=2, console=_plain_console()) as progress:
        assert not progress.uses_bar
        for step in range(1, 6):
            progress.update(step, {"reward/mean": 0.5 * step, "time/step": 1.25, "loss": 3.0})
    lines = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert [line.split(" | ")[0] for line in lines] == ["step 2/5", "step 4/5", "step 5/5"]
    assert lines[0].startswith("step 2/5 | reward 1.0000 | 1.25 s/step | eta ")
    assert lines[-1] == "step 5/5 | reward 2.5000 | 1.25 s/step"  # No ETA at the end.


def test_non_main_rank_is_silent(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    console = Console(file=io.StringIO(), force_terminal=True)
    progress = TrainingProgress(3, is_main_process=False, enabled=True, console=console)
    progress.update(1, {"reward/mean": 1.0})
    progress.close()
    assert not progress.uses_bar
    assert not caplog.records
    assert console.file.getvalue() == ""


def test_bar_shows_step_reward_and_time(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CI", raising=False)  # CI machines set CI=true, which turns the bar off.
    monkeypatch.setenv("TERM", "xterm")
    caplog.set_level(logging.INFO, logger=LOGGER)
    console = Console(file=io.StringIO(), force_terminal=True, width=150)
    with TrainingProgress(10, initial_step=2, console=console) as progress:
        assert progress.uses_bar
        progress.update(3, {"reward/mean": 0.75, "time/step": 2.5})
    out = console.file.getvalue()
    assert "3/10" in out and "reward 0.7500" in out and "2.50 s/step" in out
    assert not caplog.records  # The bar replaces the log lines.


def test_ci_disables_the_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "xterm")
    console = Console(file=io.StringIO(), force_terminal=True)
    monkeypatch.setenv("CI", "true")
    assert not interactive_console(console)
    monkeypatch.setenv("CI", "")
    assert interactive_console(console)
    assert not interactive_console(_plain_console())


def test_missing_and_non_finite_metrics(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    progress = TrainingProgress(1, console=_plain_console())
    assert progress.describe({}) == ""
    assert progress.describe({"reward/mean": float("nan")}) == "reward nan"
    progress.update(1)
    assert caplog.records[-1].getMessage() == "step 1/1"
    with pytest.raises(ValueError):
        TrainingProgress(1, log_every=0)

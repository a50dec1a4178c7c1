"""PhaseTimer arithmetic with a fake clock."""

from __future__ import annotations

import pytest

from oumi_megatron.metrics import PhaseTimer


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_phases_accumulate_and_step_covers_gaps() -> None:
    clock = FakeClock()
    timer = PhaseTimer(clock=clock, sync_cuda=False)
    timer.start_step()
    with timer.phase("rollout"):
        clock.advance(3.0)
    with timer.phase("reward"):
        clock.advance(0.5)
    clock.advance(0.25)  # Outside any phase: only in time/step.
    with timer.phase("update"):
        clock.advance(2.0)
    with timer.phase("update"):  # Re-entered: accumulates.
        clock.advance(1.0)
    assert timer.elapsed("update") == 3.0
    m = timer.step_metrics()
    assert m == {
        "time/rollout": 3.0,
        "time/reward": 0.5,
        "time/update": 3.0,
        "time/sync": 0.0,
        "time/checkpoint": 0.0,
        "time/step": 6.75,
    }


def test_reset_starts_next_step_and_custom_phases_appear() -> None:
    clock = FakeClock()
    timer = PhaseTimer(clock=clock, sync_cuda=False)
    clock.advance(1.0)
    timer.step_metrics()  # Resets; the next step starts now.
    with timer.phase("ref_logprobs"):
        clock.advance(0.5)
    peek = timer.step_metrics(reset=False)
    assert peek["time/ref_logprobs"] == 0.5 and peek["time/step"] == 0.5
    clock.advance(1.0)
    m = timer.step_metrics()
    assert m["time/step"] == 1.5 and m["time/rollout"] == 0.0
    assert timer.step_metrics()["time/ref_logprobs"] == 0.0  # Not carried into the next step.


def test_time_is_recorded_when_the_body_raises() -> None:
    clock = FakeClock()
    timer = PhaseTimer(clock=clock, sync_cuda=False)
    with pytest.raises(KeyError), timer.phase("sync"):
        clock.advance(2.0)
        raise KeyError("boom")
    assert timer.elapsed("sync") == 2.0
    with timer.phase("sync"):  # Not stuck as "running" after the exception.
        clock.advance(1.0)
    assert timer.elapsed("sync") == 3.0


def test_reentering_a_running_phase_and_reserved_name_fail() -> None:
    timer = PhaseTimer(clock=FakeClock(), sync_cuda=False)
    with timer.phase("update"), pytest.raises(RuntimeError, match="update"), timer.phase("update"):
        pass
    with pytest.raises(ValueError, match="reserved"), timer.phase("step"):
        pass


def test_cuda_sync_is_called_when_enabled(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    calls: list[int] = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: calls.append(1))
    clock = FakeClock()
    timer = PhaseTimer(clock=clock, sync_cuda=True)
    with timer.phase("update"):
        clock.advance(1.0)
    timer.step_metrics()
    assert len(calls) == 4  # construction, phase enter, phase exit, step_metrics.


def test_default_does_not_sync_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: pytest.fail("synchronize on CPU"))
    timer = PhaseTimer()
    with timer.phase("rollout"):
        pass
    assert timer.step_metrics()["time/rollout"] >= 0.0

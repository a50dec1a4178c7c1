"""Wall-clock time per training phase (rollout, reward, update, sync, checkpoint) per step."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

#: Phases always reported (0.0 when a step skipped them), so dashboards keep stable keys.
STANDARD_PHASES: tuple[str, ...] = ("rollout", "reward", "update", "sync", "checkpoint")


class PhaseTimer:
    """Accumulates seconds per named phase within one optimizer step.

    Usage::

        timer = PhaseTimer()
        for step in ...:
            timer.start_step()
            with timer.phase("rollout"):
                ...
            logger.log(step, timer.step_metrics())  # then resets for the next step

    A phase entered several times in one step accumulates. Different phases may nest, but then
    both count the inner time (keep them disjoint if their sum should match ``time/step``).

    Args:
        clock: seconds as a float; tests pass a fake clock.
        sync_cuda: call ``torch.cuda.synchronize()`` before every clock read so asynchronous
            kernels are charged to the phase that launched them. None = only when CUDA is
            available (a no-op on CPU machines).
        phases: names always present in :meth:`step_metrics`; other phases join them once
            first timed.
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.perf_counter,
        sync_cuda: bool | None = None,
        phases: tuple[str, ...] = STANDARD_PHASES,
    ) -> None:
        self._clock = clock
        self._sync_cuda = torch.cuda.is_available() if sync_cuda is None else sync_cuda
        # Every phase ever timed keeps reporting (0.0 when idle), so metric keys stay stable.
        self._known: dict[str, None] = dict.fromkeys(phases)
        self._totals: dict[str, float] = {}
        self._active: set[str] = set()
        self._step_start = self._now()

    def _now(self) -> float:
        if self._sync_cuda:
            torch.cuda.synchronize()
        return self._clock()

    def start_step(self) -> None:
        """Mark the start of a step (also done by :meth:`step_metrics` with ``reset=True``)."""
        self._totals.clear()
        self._step_start = self._now()

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the ``with`` body and add it to phase ``name`` (also when the body raises)."""
        if name == "step":
            raise ValueError("'step' is reserved for the total step time (time/step)")
        if name in self._active:
            raise RuntimeError(f"phase {name!r} is already running (re-entered)")
        self._active.add(name)
        self._known.setdefault(name)
        start = self._now()
        try:
            yield
        finally:
            self._totals[name] = self._totals.get(name, 0.0) + (self._now() - start)
            self._active.discard(name)

    def elapsed(self, name: str) -> float:
        """Seconds accumulated by phase ``name`` in the current step."""
        return self._totals.get(name, 0.0)

    def step_metrics(self, reset: bool = True) -> dict[str, float]:
        """``{"time/<phase>": s, ..., "time/step": s}`` for the current step.

        ``time/step`` is the wall time since the step started (:meth:`start_step`, the previous
        reset, or construction), so it also covers work outside any phase.
        """
        now = self._now()
        out = {f"time/{name}": self._totals.get(name, 0.0) for name in self._known}
        out["time/step"] = now - self._step_start
        if reset:
            self._totals.clear()
            self._step_start = now
        return out

"""Graceful stop on SIGTERM / SIGINT / SIGUSR1: finish the step, checkpoint it, exit 75.

Schedulers send SIGTERM before they kill a job (Kubernetes, Slurm's ``scancel``; torchrun
forwards it to its workers and waits 30 s before SIGKILL); Slurm's ``--signal=USR1@<seconds>``
warns ahead of the time limit; Ctrl-C sends SIGINT. The first of these only sets a flag: the
step in flight runs to its end, the flag is reduced over all ranks with the step's metrics (so
every rank stops after the same step), the step is checkpointed and the run exits with code 75.

A second signal at least `REPEAT_AFTER_S` after the first exits at once (code 128 + signal):
the same signal arriving again within that time is the launcher forwarding the one the whole
process group already got (torchrun after a Ctrl-C), not an operator insisting.

Before the first step (conversion, engine start, resume) nothing has been trained, so nothing
can be lost: `exit_during_startup` makes a scheduler's signals exit at once, code 75, with one
line (files being written then are temporary until renamed). `PreemptionWatch` takes over when
the training loop starts.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import sys
import threading
import time

logger = logging.getLogger(__name__)

SIGNALS = ("SIGTERM", "SIGINT", "SIGUSR1")
REPEAT_AFTER_S = 2.0


class PreemptionWatch:
    """Installs the handlers on creation (main thread only); `requested` is the signal name."""

    def __init__(self, announce: bool = True) -> None:
        self.requested: str | None = None
        self._first_at = 0.0
        self._announce = announce
        self._previous = {}
        if threading.current_thread() is not threading.main_thread():
            return  # handlers can only be set from the main thread (then signals act as usual)
        for name in SIGNALS:
            number = getattr(signal, name)
            self._previous[number] = signal.signal(number, self._handle)

    def _handle(self, number: int, frame) -> None:
        name = signal.Signals(number).name
        now = time.monotonic()
        if self.requested is None:
            self.requested, self._first_at = name, now
            if self._announce:
                logger.warning("%s received: finishing this step, then saving a checkpoint and "
                               "exiting (send it again to exit at once)", name)  # fmt: skip
            return
        if now - self._first_at < REPEAT_AFTER_S:
            return  # the launcher forwarding the signal the process group already got
        logger.warning("%s received again: exiting now, without a checkpoint", name)
        os._exit(128 + number)

    def seconds_since_request(self) -> float | None:
        """Seconds since the first signal on this rank (None: none here)."""
        return None if self.requested is None else time.monotonic() - self._first_at

    def close(self) -> None:
        """Restore the previous handlers; `exit_during_startup`'s are over by now (its
        message is about the first step), so the ones before it."""
        for number, previous in self._previous.items():
            signal.signal(number, getattr(previous, "before_startup", previous))
        self._previous = {}


def exit_during_startup(announce: bool = True) -> None:
    """Until a `PreemptionWatch` replaces them: a scheduler's SIGTERM / SIGUSR1 exit at once
    with the preemption code, saying so on rank 0 (`announce`). Ctrl-C keeps Python's
    KeyboardInterrupt (an interactive session must not lose its process). Main thread only."""
    from oumi_megatron.stops import EXIT_PREEMPTED

    if threading.current_thread() is not threading.main_thread():
        return

    def handle(number: int, frame) -> None:
        if announce:
            print(f"oumi-megatron: {signal.Signals(number).name} before the first step: exiting "
                  f"(nothing trained yet, nothing to save)", file=sys.stderr, flush=True)  # fmt: skip
        os._exit(EXIT_PREEMPTED)

    for name in ("SIGTERM", "SIGUSR1"):
        number = getattr(signal, name)
        previous = signal.getsignal(number)
        own = functools.partial(handle)
        own.before_startup = getattr(previous, "before_startup", previous)  # type: ignore[attr-defined]
        signal.signal(number, own)

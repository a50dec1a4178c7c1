"""Fault injection for tests: send a signal to this process at a named point of step N.

``OUMI_MEGATRON_FAULT=<point>:<step>[:<signal>[:<rank>[:launcher]]]``, e.g. ``after_save:3``
(SIGKILL at the end of step 3's save, every rank), ``rollout:2:TERM:1`` (SIGTERM during step
2's rollout, rank 1 only) or ``rollout:2:TERM:0:launcher`` (rank 0 sends SIGTERM to its parent,
the torchrun agent, as a scheduler would: the agent passes it on to every worker). Points:
``rollout``, ``update`` (before the policy update), ``before_rename``, ``after_save``,
``after_schedule`` (an asynchronous save just handed to its writer). Never set in normal runs.
"""

from __future__ import annotations

import logging
import os
import signal

logger = logging.getLogger(__name__)
FAULT_ENV = "OUMI_MEGATRON_FAULT"


def fault_point(name: str, step: int) -> None:
    spec = os.environ.get(FAULT_ENV, "").split(":")
    if len(spec) < 2 or spec[0] != name or spec[1] != str(step):
        return
    number = getattr(signal, f"SIG{spec[2]}") if len(spec) > 2 else signal.SIGKILL
    rank = int(os.environ.get("RANK", "0"))
    if len(spec) > 3 and int(spec[3]) != rank:
        return
    launcher = len(spec) > 4 and spec[4] == "launcher"
    logger.warning("fault injection: %s to %s at %s of step %d", signal.Signals(number).name,
                   "the launcher" if launcher else f"rank {rank}", name, step)  # fmt: skip
    os.kill(os.getppid() if launcher else os.getpid(), number)

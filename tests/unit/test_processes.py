"""The trainer's helper processes (rollout processes, checkpoint writers) leave SIGINT and
SIGTERM to the trainer."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
import time

import pytest

from oumi_megatron.processes import die_with_parent


def _child(ready) -> None:
    die_with_parent()
    ready.set()
    time.sleep(60)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_helper_leaves_group_signals_to_the_trainer():
    ctx = mp.get_context("fork")
    ready = ctx.Event()
    child = ctx.Process(target=_child, args=(ready,), daemon=True)
    child.start()
    try:
        assert ready.wait(10)
        for sig in (signal.SIGTERM, signal.SIGINT):  # what a scheduler or Ctrl-C sends all
            os.kill(child.pid, sig)
        time.sleep(0.5)
        assert child.is_alive(), "the trainer decides when its helpers stop"
    finally:
        child.kill()
        child.join(5)
    assert child.exitcode == -signal.SIGKILL

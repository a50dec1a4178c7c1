"""Processes the trainer starts: they must not outlive it, and they meet on free local ports."""

from __future__ import annotations

import ctypes
import signal
import socket
import sys


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (PR_SET_PDEATHSIG).

    A killed trainer must not leave writers or rollout processes behind (holding its stdout,
    GPUs or ports). Call it first thing in the child, then check ``os.getppid()`` against the
    parent's pid: the parent may have died before the call.

    Ctrl-C and a scheduler's SIGTERM are left to the trainer (both ignored here): they may
    reach the whole process group (Slurm signals every process of the job), and the trainer
    finishes its step, lets a save still being written complete, and then stops its processes
    itself (by message, or SIGKILL).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]

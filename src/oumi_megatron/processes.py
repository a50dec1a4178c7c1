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

    Ctrl-C is left to the trainer (SIGINT ignored here): it reaches the whole process group,
    and the trainer finishes its step, saves, and then stops its processes itself.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]

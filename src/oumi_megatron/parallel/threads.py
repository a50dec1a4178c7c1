"""CPU threads per process when the launcher left ``OMP_NUM_THREADS`` unset.

torchrun sets ``OMP_NUM_THREADS=1`` for several processes per node but leaves a single process
alone, and torch then starts one OpenMP thread per core. Those threads spin while they wait, so
on a CPU shared with anything else (a second job, a data loader, a test run) steps slow down by
an order of magnitude: measured on a 2-core machine, the tiny demo's step took 0.40 s with 2
threads and 0.49 s with 1 when idle, but 5–10 s with 2 threads and 0.5 s with 1 while another
run shared the cores. One core is therefore left free.
"""

from __future__ import annotations

import logging
import os

logger = logging.getLogger(__name__)


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_threads(cpus: int, local_processes: int) -> int:
    """Cores per local process, one core left free, at least 1."""
    return max(1, cpus // max(local_processes, 1) - 1)


def set_default_threads() -> int | None:
    """Sets torch's (and child processes') thread count unless ``OMP_NUM_THREADS`` is set;
    returns the count chosen, or None when the user's setting was kept."""
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    import torch

    threads = default_threads(usable_cpus(), int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)
    logger.info("OMP_NUM_THREADS unset: %d CPU thread(s) per process (set it to choose)", threads)
    return threads

"""Ways a run stops on purpose, each with its exit code (docs/operations.md).

=====  =====================================================================================
code   meaning
=====  =====================================================================================
0      finished
2      configuration or input error, found before any work (nothing written)
3      stopped by a failure policy (e.g. a reward function failing on every sample)
4      the converted model does not compute what the Hugging Face model does (parity gate)
75     preempted (SIGTERM / SIGINT / SIGUSR1): the last completed step was checkpointed;
       ``--resume latest`` continues exactly (75 is EX_TEMPFAIL: "try again")
=====  =====================================================================================
"""

from __future__ import annotations

EXIT_CONFIG = 2
EXIT_FAILURE_POLICY = 3
EXIT_PARITY = 4
EXIT_PREEMPTED = 75


class RunStopped(RuntimeError):
    """A deliberate stop: the CLI prints the message (rank 0) and exits with `exit_code`."""

    exit_code = EXIT_FAILURE_POLICY


class FailurePolicyStop(RunStopped):
    """A failure policy (rewards, rollout) stopped the run."""

    exit_code = EXIT_FAILURE_POLICY


class Preempted(RunStopped):
    """A signal asked the run to stop; the last completed step is saved."""

    exit_code = EXIT_PREEMPTED

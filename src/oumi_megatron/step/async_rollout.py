"""One-step off-policy (async) GRPO: the next step's rollout generates during this update.

With ``grpo.max_off_policy_steps: 1`` the rollout processes get step k+1's prompts right
before step k's update and generate them with the weights synced after step k-1 while the
trainer updates; the trainer waits for them when the update ends, then syncs the new weights
(the processes must be idle for that). Step k+1 therefore trains the weights of step k on
completions of step k-1's: one version stale (``async/staleness``), corrected in the loss by
the rollout correction's importance weight ``pi_old / pi_rollout`` (the trainer's log-probs of
the current weights against the engine's, as NeMo-RL's async GRPO does). The first step
generates on-policy.

A checkpoint taken after step k holds step k+1's finished batch (``state_dict``), so a resumed
run trains on exactly the completions the uninterrupted run would have.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from oumi_megatron.step.rollout import RolloutBatch


@dataclass
class InFlight:
    """A rollout generating for step ``step`` (1-based), by the weights of version ``version``
    (the number of GRPO steps trained before them)."""

    step: int
    version: int
    wait: Callable[[], RolloutBatch] | None = None
    batch: RolloutBatch | None = None

    def result(self) -> RolloutBatch:
        """The batch (waits for the engines the first time)."""
        if self.batch is None:
            self.batch = self.wait() if self.wait is not None else RolloutBatch()
            self.wait = None
        return self.batch

    def state_dict(self) -> dict:
        return {"step": self.step, "version": self.version, "batch": self.result().state_dict()}

    @classmethod
    def from_state_dict(cls, state: dict, holds: bool) -> InFlight:
        """``holds``: this rank generated it (the others keep an empty batch)."""
        batch = RolloutBatch.from_state_dict(state["batch"]) if holds else RolloutBatch()
        return cls(step=int(state["step"]), version=int(state["version"]), batch=batch)


def staleness_metrics(trained_version: int, generated_version: int) -> dict[str, float]:
    """Policy versions between the weights trained and those that generated the batch."""
    return {"async/staleness": float(trained_version - generated_version)}

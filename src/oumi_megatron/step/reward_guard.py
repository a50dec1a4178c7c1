"""Stop a run whose reward functions fail too often, instead of training on zeros.

A sample a reward function cannot score gets 0 for it (`rewards/scoring.py`), which keeps a run
alive through the odd bad completion. When a function fails on every sample, though, every
advantage from it is 0 and the run would learn nothing while looking healthy. Per function:

- one step where it fails on at least ``grpo.reward_failure_stop_frac`` of the samples
  (default 1.0: all of them) stops the run;
- so do ``grpo.reward_failure_window`` consecutive steps where it fails on more than half.

The same bounds apply, each on its own, to the rollout engines' output: completions with no
token at all (``response_length/empty_frac``), which an engine or rollout process that has gone
wrong returns (a model that only ever emits its stop token has gone wrong too: nothing is left
to learn), and malformed completions (``response_length/malformed_frac``: log-probs that do not
match the tokens, `step/rollout.py` empties them). A batch whose samples do not form the step's
groups stops the run at once.

The decision uses the globally reduced counts, so every rank stops at the same step.
"""

from __future__ import annotations

from collections import deque

from oumi_megatron.rewards.scoring import RewardFailure, metric_name
from oumi_megatron.stops import FailurePolicyStop

EMPTY_FRAC = "response_length/empty_frac"
MALFORMED_FRAC = "response_length/malformed_frac"


class RewardFailureGuard:
    def __init__(self, names: list[str], stop_frac: float, window: int) -> None:
        self.stop_frac, self.window = stop_frac, window
        self.recent = {name: deque(maxlen=window) for name in names}
        self.recent_output = {kind: deque(maxlen=window) for kind in ("empty", "malformed")}

    def _crossed(self, recent: deque[float], frac: float) -> str | None:
        """Records this step's failure fraction; which bound it crossed (``"step"``: this
        step alone, ``"window"``: more than half in each of the last steps), or None."""
        recent.append(frac)
        if frac >= self.stop_frac:
            return "step"
        if len(recent) == self.window and min(recent) > 0.5:
            return "window"
        return None

    def _fix(self, bound: str) -> str:
        if bound == "step":
            return f"raise grpo.reward_failure_stop_frac (now {self.stop_frac})"
        return f"raise grpo.reward_failure_window (now {self.window})"

    def check_rollout(self, step: int, metrics: dict[str, float]) -> None:
        """Raise `FailurePolicyStop` if the step's empty or malformed completions crossed a
        bound."""
        for kind, key in (("empty", EMPTY_FRAC), ("malformed", MALFORMED_FRAC)):
            frac = metrics.get(key, 0.0)
            bound = self._crossed(self.recent_output[kind], frac)
            if bound is None:
                continue
            reason = (
                f"{frac:.0%} of the completions of step {step} are {kind}" if bound == "step"
                else f"more than half of the completions are {kind} in each of the last "
                     f"{self.window} steps (up to step {step})"
            )  # fmt: skip
            what = "no tokens" if kind == "empty" else "malformed output (see the rollout log)"
            fix = self._fix(bound)
            raise FailurePolicyStop(
                f"the rollout engines returned {what}: {reason}. Fix: check the rollout log (an "
                f"engine or rollout process failing) and the sampling settings (stop tokens, "
                f"grpo.max_completion_length), or {fix} to keep going."
            )

    def check(self, step: int, metrics: dict[str, float], failed: list[RewardFailure]) -> None:
        """Raise `FailurePolicyStop` if a function crossed a bound at `step`; `metrics` holds
        ``reward/<name>/failures`` and ``reward/<name>/failure_frac`` (global), `failed` this
        rank's failures (for the first error in the message)."""
        for name, recent in self.recent.items():
            key = f"reward/{metric_name(name)}"
            frac = metrics.get(f"{key}/failure_frac", 0.0)
            bound = self._crossed(recent, frac)
            if bound is None:
                continue
            fix = self._fix(bound)
            reason = (
                f"failed on {metrics[f'{key}/failures']:.0f} samples ({frac:.0%}) at step {step}"
                if bound == "step"
                else f"failed on more than half of the samples in each of the last "
                     f"{self.window} steps (up to step {step})"
            )  # fmt: skip
            first = next((f for f in failed if f.function == name), None)
            error = f" First error (sample {first.sample_id}): {first.error}." if first else ""
            raise FailurePolicyStop(
                f"reward function {name!r} {reason}; those samples scored 0 for it, so the "
                f"run would train on nothing from it.{error} Fix the function, or {fix} to "
                f"keep going."
            )

"""Deliberate stops: the reward failure policy and the preemption signal handler."""

from __future__ import annotations

import os
import signal

import pytest

from oumi_megatron.parallel import preemption
from oumi_megatron.parallel.preemption import PreemptionWatch
from oumi_megatron.rewards.scoring import RewardFailure
from oumi_megatron.step.reward_guard import EMPTY_FRAC, MALFORMED_FRAC, RewardFailureGuard
from oumi_megatron.stops import EXIT_FAILURE_POLICY, EXIT_PREEMPTED, FailurePolicyStop, Preempted


def _metrics(**fracs: float) -> dict[str, float]:
    out = {}
    for name, frac in fracs.items():
        out[f"reward/{name}/failure_frac"] = frac
        out[f"reward/{name}/failures"] = frac * 64
    return out


def test_a_function_failing_on_every_sample_stops_the_run_by_name():
    guard = RewardFailureGuard(["fine", "broken"], stop_frac=1.0, window=5)
    guard.check(1, _metrics(fine=0.0, broken=0.5), [])
    failed = [RewardFailure("broken", "p3-g1", "ZeroDivisionError: division by zero")]
    with pytest.raises(FailurePolicyStop) as stop:
        guard.check(2, _metrics(fine=0.1, broken=1.0), failed)
    message = str(stop.value)
    assert "'broken'" in message and "64 samples (100%) at step 2" in message
    assert "ZeroDivisionError" in message and "p3-g1" in message
    assert "grpo.reward_failure_stop_frac" in message
    assert stop.value.exit_code == EXIT_FAILURE_POLICY == 3


def test_more_than_half_over_the_window_stops_and_less_does_not():
    guard = RewardFailureGuard(["flaky"], stop_frac=1.0, window=3)
    for step, frac in enumerate([0.6, 0.7, 0.5, 0.9, 0.6], start=1):  # 0.5 breaks the run
        guard.check(step, _metrics(flaky=frac), [])
    with pytest.raises(FailurePolicyStop, match="last 3 steps"):
        guard.check(6, _metrics(flaky=0.8), [])


def test_a_lower_bound_stops_earlier():
    guard = RewardFailureGuard(["f"], stop_frac=0.25, window=5)
    guard.check(1, _metrics(f=0.2), [])
    with pytest.raises(FailurePolicyStop, match="25%"):
        guard.check(2, _metrics(f=0.25), [])


def test_empty_completions_stop_the_run_at_the_same_bounds():
    """All of a step's completions empty stops at once; more than half over the window too;
    a few empty ones (a model may stop at once now and then) do not."""
    guard = RewardFailureGuard([], stop_frac=1.0, window=3)
    for step, frac in enumerate([0.1, 0.6, 0.7], start=1):
        guard.check_rollout(step, {EMPTY_FRAC: frac})
    with pytest.raises(FailurePolicyStop, match="empty in each of the last 3 steps") as stop:
        guard.check_rollout(4, {EMPTY_FRAC: 0.9})
    assert stop.value.exit_code == EXIT_FAILURE_POLICY
    guard = RewardFailureGuard([], stop_frac=1.0, window=3)
    with pytest.raises(FailurePolicyStop, match="100% of the completions of step 1 are empty"):
        guard.check_rollout(1, {EMPTY_FRAC: 1.0})


def test_malformed_completions_have_their_own_bounds():
    """Malformed and empty completions are bounded apart: a step with half of each stops on
    neither; all malformed stops at once, naming them."""
    guard = RewardFailureGuard([], stop_frac=1.0, window=2)
    guard.check_rollout(1, {EMPTY_FRAC: 0.5, MALFORMED_FRAC: 0.5})
    guard.check_rollout(2, {EMPTY_FRAC: 0.4, MALFORMED_FRAC: 0.6})
    with pytest.raises(FailurePolicyStop, match="malformed in each of the last 2 steps"):
        guard.check_rollout(3, {MALFORMED_FRAC: 0.7})
    guard = RewardFailureGuard([], stop_frac=0.5, window=5)
    with pytest.raises(FailurePolicyStop, match=r"malformed output \(see the rollout log\): 50%"):
        guard.check_rollout(1, {MALFORMED_FRAC: 0.5})


def test_empty_completions_are_counted_in_the_step_metrics():
    from oumi_megatron.step.metrics import reduce_tally, rollout_tally
    from oumi_megatron.step.reward import ScoredBatch
    from oumi_megatron.step.rollout import RolloutBatch

    n = 4
    batch = RolloutBatch(
        sequence_ids=list(range(n)), prompt_ids=[[1]] * n, completion_ids=[[], [5], [], [5, 6]],
        rollout_logprobs=[[], [0.0], [], [0.0, 0.0]], finish_reasons=["stop"] * n,
        sample_ids=[f"p0/g{i}" for i in range(n)], prompts_text=["p"] * n,
        completions_text=["", "a", "", "ab"], columns=[{}] * n,
    )  # fmt: skip
    scored = ScoredBatch(rewards=[0.0] * n, advantages=[0.0] * n)
    metrics = reduce_tally(rollout_tally(batch, scored, [], "none"), num_generations=4)
    assert metrics[EMPTY_FRAC] == 0.5


def test_first_signal_sets_the_flag_and_a_quick_repeat_is_ignored(monkeypatch):
    exits = []
    monkeypatch.setattr(preemption.os, "_exit", exits.append)
    watch = PreemptionWatch(announce=False)
    try:
        assert watch.requested is None
        os.kill(os.getpid(), signal.SIGTERM)
        assert watch.requested == "SIGTERM"
        os.kill(os.getpid(), signal.SIGINT)  # torchrun forwarding: within REPEAT_AFTER_S
        assert exits == [] and watch.requested == "SIGTERM"
        watch._first_at -= preemption.REPEAT_AFTER_S
        os.kill(os.getpid(), signal.SIGUSR1)
        assert exits == [128 + signal.SIGUSR1]
    finally:
        watch.close()
    assert signal.getsignal(signal.SIGTERM) != watch._handle
    assert Preempted("x").exit_code == EXIT_PREEMPTED == 75


def test_a_signal_before_the_first_step_exits_at_once_with_the_preemption_code():
    """Conversion, engine start, resume: nothing trained yet, so exit 75 at once, one line."""
    import subprocess
    import sys

    script = ("import sys, time\n"
              "from oumi_megatron.parallel.preemption import exit_during_startup\n"
              "exit_during_startup()\nprint('ready', flush=True)\ntime.sleep(30)\n")  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 75
    assert "SIGTERM before the first step: exiting (nothing trained yet, nothing to save)" in err


def test_after_training_the_handlers_before_startup_are_back():
    """The start-up handlers ("before the first step") end with the run's watch: closing it
    restores what was there before either, even after a second start-up in one process."""
    original = signal.getsignal(signal.SIGTERM)
    try:
        for _ in range(2):  # e.g. two trainers built in one notebook
            preemption.exit_during_startup(announce=False)
            assert signal.getsignal(signal.SIGTERM) is not original
            watch = PreemptionWatch(announce=False)
            watch.close()
            assert signal.getsignal(signal.SIGTERM) is original
    finally:
        signal.signal(signal.SIGTERM, original)

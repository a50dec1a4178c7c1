"""The CLI's domain errors on 2 ranks: one message listing every problem, printed by rank 0
only, no traceback from any rank, exit code 2 (the config code), and nothing converted."""

from __future__ import annotations

import subprocess

from helpers import RECIPE, REPO, SMALL_RUN, TORCHRUN, quiet_env

from oumi_megatron.stops import EXIT_CONFIG


def test_two_ranks_report_every_problem_once_without_a_traceback(tiny_models, tmp_path):
    out, logs = tmp_path / "out", tmp_path / "logs"
    command = [str(TORCHRUN), "--standalone", "--nproc-per-node=2", "--log-dir", str(logs),
               "--redirects", "3", "-m", "oumi_megatron", "train", "-c", str(RECIPE),
               f"model.model_name={tiny_models / 'llama'}", f"training.output_dir={out}",
               *SMALL_RUN, "training.learning_rate=-1e-6", "grpo.reward_functions=[no_such_reward]",
               "grpo.reward_weights=null"]  # fmt: skip
    done = subprocess.run(command, env=quiet_env(), capture_output=True, text=True, timeout=300,
                          cwd=REPO)  # fmt: skip
    assert done.returncode != 0
    per_rank = {int(p.parent.name): p.read_text() for p in logs.rglob("stderr.log")}
    assert sorted(per_rank) == [0, 1], sorted(per_rank)
    first, second = per_rank[0], per_rank[1]
    assert first.count("oumi-megatron: configuration error:") == 1, first[-3000:]
    assert "3 problems in the config:" in first  # the accuracy reward is no longer listed too
    for problem in ("training.learning_rate (-1e-06) must be > 0", "no_such_reward",
                    "grpo.accuracy_reward ('arithmetic_exact')"):  # fmt: skip
        assert problem in first, problem
    assert "configuration error" not in second
    assert "Traceback" not in first + second
    assert f"exitcode  : {EXIT_CONFIG}" in done.stdout + done.stderr
    assert not (out / "megatron_checkpoint").exists()

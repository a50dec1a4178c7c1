"""A training output directory belongs to one run: fresh runs refuse another run's results,
an explicit overwrite deletes them (keeping the converted model), a resume keeps the id."""

from __future__ import annotations

import json

from oumi_megatron.run_dir import RUN_FILE, check_fresh_run, claim, previous_results


def _old_run(root):
    (root / "checkpoints" / "step_10").mkdir(parents=True)
    (root / "checkpoints" / "latest").write_text("step_10")
    (root / "hf_model").mkdir()
    (root / "metrics.jsonl").write_text('{"step": 10}\n')
    (root / "completions.jsonl").write_text('{"step": 10, "completion": "42"}\n')
    (root / "tensorboard").mkdir()
    (root / "reward_curve.png").write_bytes(b"png")
    (root / "megatron_checkpoint").mkdir()
    (root / "megatron_checkpoint" / "weights").write_text("converted")


def test_a_fresh_run_in_a_used_directory_is_refused_with_the_choices(tmp_path):
    _old_run(tmp_path)
    found = ["checkpoints/step_10", "hf_model", "metrics.jsonl", "completions.jsonl"]
    assert previous_results(tmp_path) == found
    problem = check_fresh_run(tmp_path, resuming=False, overwrite=False)
    assert f"holds another run's results ({', '.join(found)})" in problem
    for choice in ("--resume latest", "new training.output_dir", "overwrite_output_dir=true"):
        assert choice in problem
    assert check_fresh_run(tmp_path, resuming=True, overwrite=False) is None
    assert check_fresh_run(tmp_path, resuming=False, overwrite=True) is None


def test_empty_or_cache_only_directories_are_free(tmp_path):
    assert check_fresh_run(tmp_path / "new", resuming=False, overwrite=False) is None
    (tmp_path / "megatron_checkpoint").mkdir()
    (tmp_path / "metrics.jsonl").write_text("")
    assert check_fresh_run(tmp_path, resuming=False, overwrite=False) is None


def test_overwrite_leaves_no_trace_of_the_old_run_but_the_converted_model(tmp_path):
    _old_run(tmp_path)
    first = claim(tmp_path, "config-a", fresh=True, overwrite=False)
    run_id = claim(tmp_path, "config-b", fresh=True, overwrite=True)
    assert run_id != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["megatron_checkpoint", RUN_FILE]
    assert (tmp_path / "megatron_checkpoint" / "weights").read_text() == "converted"
    identity = json.loads((tmp_path / RUN_FILE).read_text())
    assert identity["run_id"] == run_id and len(identity["config_sha256"]) == 64


def test_a_resume_keeps_the_run_identity(tmp_path):
    run_id = claim(tmp_path, "config", fresh=True, overwrite=False)
    (tmp_path / "checkpoints" / "step_2").mkdir(parents=True)
    assert claim(tmp_path, "config, edited", fresh=False, overwrite=True) == run_id
    assert (tmp_path / "checkpoints" / "step_2").exists()


def _setup(tp: int, world: int, distopt: bool = True, **layout):
    from types import SimpleNamespace

    import torch

    from oumi_megatron.parallel.layout import ParallelLayout

    ddp = SimpleNamespace(use_distributed_optimizer=distopt)
    return SimpleNamespace(layout=ParallelLayout(tp=tp, **layout), world_size=world,
                           cfg=SimpleNamespace(megatron=SimpleNamespace(ddp_config=ddp)),
                           params_dtype=torch.float32)  # fmt: skip


def test_a_resume_with_another_layout_is_refused_by_name(tmp_path):
    from oumi_megatron.training.checkpoint import layout_mismatch, layout_record

    step = tmp_path / "step_4"
    step.mkdir()
    saved = layout_record(_setup(tp=1, world=2))  # DP2
    (step / "trainer_state.json").write_text(json.dumps({"step": 4, "layout": saved}))
    assert layout_mismatch(step, layout_record(_setup(tp=1, world=2))) is None
    problem = layout_mismatch(step, layout_record(_setup(tp=2, world=2)))  # TP2, DP1
    assert "megatron.tensor_model_parallel_size: saved 1, now 2" in problem
    assert "megatron.data_parallel_size: saved 2, now 1" in problem
    assert "export --checkpoint step_4" in problem
    assert "use_distributed_optimizer" in layout_mismatch(
        step, layout_record(_setup(tp=1, world=2, distopt=False))
    )
    from oumi_megatron.parallel.pipeline_split import PipelineSplit

    saved = layout_record(_setup(tp=1, world=2, pp=2, split=PipelineSplit(first_stage_layers=1)))
    (step / "trainer_state.json").write_text(json.dumps({"step": 4, "layout": saved}))
    even = layout_mismatch(step, layout_record(_setup(tp=1, world=2, pp=2)))
    assert (
        "megatron.transformer_config.num_layers_in_first_pipeline_stage: saved 1, now None" in even
    )
    (step / "trainer_state.json").write_text(json.dumps({"step": 4}))  # older checkpoints
    assert layout_mismatch(step, layout_record(_setup(tp=2, world=2))) is None
    for key in [k for k in saved if k.startswith("transformer_config.")]:
        del saved[key]  # recorded only later, as expert TP
    del saved["expert_tensor_parallel_size"]
    (step / "trainer_state.json").write_text(json.dumps({"step": 4, "layout": saved}))
    assert layout_mismatch(step, layout_record(_setup(tp=1, world=2, pp=2))) is None


def _checkpoint(root, step):
    path = root / f"step_{step}"
    path.mkdir(parents=True)
    (path / "trainer_state.json").write_text(json.dumps({"step": step}))
    return path


def test_resuming_an_earlier_step_sets_the_later_ones_aside(tmp_path):
    """`latest` and pruning never cross branches: after --resume step_3 with step_5 and step_6
    saved, the resumed run's own step_4 is what `latest` finds and what pruning keeps."""
    from oumi_megatron.training import checkpoint as ck

    root = tmp_path / "checkpoints"
    for step in (3, 5, 6):
        _checkpoint(root, step)
    (root / ck.LATEST).write_text("step_6")
    resumed = ck.resolve_resume_path(root, "step_3")
    moved = ck.set_aside_later(root, resumed)
    assert [p.relative_to(root).as_posix() for p in moved] == [
        "abandoned/step_5",
        "abandoned/step_6",
    ]
    assert (root / "abandoned" / "step_6" / "trainer_state.json").exists()  # kept, not deleted
    assert [p.name for p in ck.list_checkpoints(root)] == ["step_3"]
    assert (root / ck.LATEST).read_text() == "step_3"
    _checkpoint(root, 4)  # the resumed run's next save, then its pruning
    ck._prune(root, keep_last=1)
    assert [p.name for p in ck.list_checkpoints(root)] == ["step_4"]
    assert ck.resolve_resume_path(root, "latest") == root / "step_4"
    assert ck.set_aside_later(root, root / "step_4") == []  # nothing later: nothing moves

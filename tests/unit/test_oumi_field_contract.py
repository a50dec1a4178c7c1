"""Every field of Oumi's training:/model:/data: sections is read (a test observes its effect),
an alias of one of ours, or refused when set: none is accepted and silently ignored."""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from pathlib import Path

from oumi_megatron.config.aliases import OUMI_ALIAS_PATHS
from oumi_megatron.config.oumi_fields import (
    CHECKED_ELSEWHERE,
    READ_OUMI_FIELDS,
    unused_oumi_fields,
)

TESTS = Path(__file__).resolve().parents[1]
# Read field -> the test that observes its effect.
OBSERVED = {
    "training.compile": "integration/test_grpo_train.py::test_layout_trains_syncs_and_exports",
    "model.model_name": "integration/test_grpo_train.py::test_layout_trains_syncs_and_exports",
    "model.tokenizer_name": "unit/test_oumi_field_contract.py::test_tokenizer_name_is_read",
    "model.chat_template": "integration/test_oumi_launch.py::test_epochs_and_chat_template_act",
    "model.trust_remote_code": "unit/test_oumi_field_contract.py::test_trust_remote_code_is_read",
    "data.train.datasets": "integration/test_grpo_train.py::test_layout_trains_syncs_and_exports",
    "data.train.datasets[].dataset_name": "unit/test_data_sources.py::test_builtin_datasets",
    "data.train.datasets[].dataset_path": "unit/test_data_sources.py::test_file_formats",
    "data.train.datasets[].subset": "unit/test_data_sources.py::test_hf_dataset_saved_to_disk",
    "data.train.datasets[].split": "unit/test_data_sources.py::test_hf_dataset_saved_to_disk",
    "data.train.datasets[].dataset_kwargs": (
        "unit/test_data_prompts.py::test_raw_text_template_and_column_options"
    ),
    "data.train.datasets[].sample_count": (
        "unit/test_data_sources.py::test_dataset_name_as_path_and_oumi_like_params"
    ),
    "data.train.datasets[].shuffle": (
        "unit/test_data_sources.py::test_dataset_name_as_path_and_oumi_like_params"
    ),
    "data.train.datasets[].seed": (
        "unit/test_data_sources.py::test_dataset_name_as_path_and_oumi_like_params"
    ),
    "data.validation.datasets": "integration/test_oumi_launch.py::test_evaluation_runs_on_held_out_prompts",
    **{
        path.replace("data.train.", "data.validation."): test
        for path, test in (
            (
                "data.train.datasets[].dataset_name",
                "integration/test_oumi_launch.py::test_evaluation_runs_on_held_out_prompts",
            ),
            ("data.train.datasets[].dataset_path", "unit/test_data_sources.py::test_file_formats"),
            (
                "data.train.datasets[].subset",
                "unit/test_data_sources.py::test_hf_dataset_saved_to_disk",
            ),
            (
                "data.train.datasets[].split",
                "unit/test_data_sources.py::test_hf_dataset_saved_to_disk",
            ),
            (
                "data.train.datasets[].dataset_kwargs",
                "integration/test_oumi_launch.py::test_evaluation_runs_on_held_out_prompts",
            ),
            (
                "data.train.datasets[].sample_count",
                "unit/test_data_sources.py::test_dataset_name_as_path_and_oumi_like_params",
            ),
            (
                "data.train.datasets[].shuffle",
                "unit/test_data_sources.py::test_dataset_name_as_path_and_oumi_like_params",
            ),
            (
                "data.train.datasets[].seed",
                "integration/test_oumi_launch.py::test_evaluation_runs_on_held_out_prompts",
            ),
        )
    },  # the validation split is read by the same loader as the training split
    "training.eval_strategy": "integration/test_oumi_launch.py::test_evaluation_runs_on_held_out_prompts",
    "training.eval_steps": "integration/test_oumi_launch.py::test_evaluation_runs_on_held_out_prompts",
    "training.trainer_type": "unit/test_config_static_checks.py::test_non_megatron_trainer",
    "training.learning_rate": "unit/test_config_static_checks.py::test_min_lr_above_lr",
    "training.max_steps": "integration/test_grpo_train.py::test_resume_after_kill_equals_straight_run",
    "training.num_train_epochs": "integration/test_oumi_launch.py::test_epochs_and_chat_template_act",
    "training.gradient_accumulation_steps": (
        "unit/test_config_validation.py::test_global_batch_derived_from_gradient_accumulation"
    ),
    "training.output_dir": "integration/test_grpo_train.py::test_layout_trains_syncs_and_exports",
    "training.save_steps": (
        "integration/test_grpo_train.py::test_kill_while_saving_keeps_previous_checkpoint"
    ),
    "training.save_final_model": (
        "integration/test_oumi_launch.py::test_oumi_distributed_torchrun_two_processes"
    ),
    "training.resume_from_checkpoint": (
        "integration/test_grpo_train.py::test_resume_after_kill_equals_straight_run"
    ),
    "training.try_resume_from_last_checkpoint": (
        "integration/test_grpo_train.py::test_kill_while_saving_keeps_previous_checkpoint"
    ),
    "training.seed": "unit/test_step_rollout.py::test_share_uses_the_seed_of_each_prompt_in_the_step",
    "training.logging_steps": "unit/test_oumi_field_contract.py::test_logging_steps_is_read",
    "training.run_name": "unit/test_metrics_sinks.py::test_wandb_offline_run_dir",
    "training.enable_wandb": "unit/test_metrics_sinks.py::test_wandb_offline_run_dir",
    "training.enable_tensorboard": "unit/test_metrics_sinks.py::test_tensorboard_scalars_read_back",
    "training.logging_dir": "unit/test_metrics_sinks.py::test_tensorboard_logging_dir_override",
    "training.log_level": "unit/test_console.py::test_log_level_applies_to_our_messages",
}


def _unwrap(tp):
    """X of Optional[X] / X | None; other types unchanged."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        arms = [a for a in typing.get_args(tp) if a is not type(None)]
        return arms[0] if len(arms) == 1 else tp
    return tp


def _leaf_paths(cls: type, path: str):
    """(generic path, annotation) of every leaf field of dataclass ``cls``, by type."""
    hints = typing.get_type_hints(cls)
    for spec in dataclasses.fields(cls):
        tp, here = hints[spec.name], f"{path}.{spec.name}"
        inner = _unwrap(tp)
        if dataclasses.is_dataclass(inner):
            yield from _leaf_paths(inner, here)
        elif typing.get_origin(inner) is list and dataclasses.is_dataclass(
            (typing.get_args(inner) or (None,))[0]
        ):
            yield here, inner  # the list itself, then its items' fields
            yield from _leaf_paths(typing.get_args(inner)[0], here + "[]")
        else:
            yield here, tp


def _all_paths():
    from oumi.core.configs import TrainingConfig

    return [(p, tp) for f in dataclasses.fields(TrainingConfig)
            for p, tp in _leaf_paths(typing.get_type_hints(TrainingConfig)[f.name], f.name)]  # fmt: skip


def test_every_read_field_has_a_test_observing_it():
    for path, test in OBSERVED.items():
        file, name = test.split("::")
        assert f"def {name}(" in (TESTS / file).read_text(), f"{path}: {test} is missing"
    assert set(READ_OUMI_FIELDS) == set(OBSERVED), set(READ_OUMI_FIELDS) ^ set(OBSERVED)


def _other_value(value, tp):
    """A value of type ``tp`` different from ``value`` (Oumi's default)."""
    inner = _unwrap(tp)
    origin = typing.get_origin(inner)
    if isinstance(value, bool) or inner is bool:
        return not value
    if isinstance(inner, type) and issubclass(inner, enum.Enum):
        return next(m for m in inner if m != value)
    if inner is int:
        return (value or 0) + 3
    if inner is float:
        return (value or 0.0) + 0.5
    if origin is list or inner is list:
        return ["x"]
    if origin is dict or inner is dict:
        return {"x": 1}
    if origin is typing.Literal:
        return next(a for a in typing.get_args(inner) if a != value)
    return "x-not-default"


def _owner(cfg, path: str):
    obj = cfg
    *parents, name = path.replace("[]", ".0").split(".")
    for part in parents:
        if part.isdigit():
            obj = obj[int(part)]
            continue
        child = getattr(obj, part)
        if child is None:  # an optional section left unset: set its defaults, then the field
            child = _unwrap(typing.get_type_hints(type(obj))[part])()
            setattr(obj, part, child)
        obj = child
    return obj, name


def test_every_other_field_is_refused_when_set(load):
    """Each field neither read nor aliased, set alone to a non-default value, is named in the
    refusal (list items as [0])."""
    from oumi.core.configs.params.data_params import DatasetParams

    unchecked = []
    for path, tp in _all_paths():
        if path in READ_OUMI_FIELDS or path in OUMI_ALIAS_PATHS or path in CHECKED_ELSEWHERE:
            continue
        if path.endswith(".datasets"):
            continue  # a list of datasets: its items' fields are walked
        cfg = load()
        for split in ("validation", "test"):  # give every split one dataset to walk into
            getattr(cfg.data, split).datasets = [DatasetParams(dataset_name="x")]
        owner, name = _owner(cfg, path)
        setattr(owner, name, _other_value(getattr(owner, name), tp))
        problems = unused_oumi_fields(cfg, OUMI_ALIAS_PATHS)
        shown = path.replace("[]", "[0]")
        if not any(p.startswith(f"{shown} (") for p in problems):
            unchecked.append(path)
    assert not unchecked, f"set but not refused: {unchecked}"


def test_the_walk_covers_oumis_sections():
    paths = {p for p, _ in _all_paths()}
    assert {"training.eval_steps", "model.attn_implementation", "peft.lora_r",
            "data.validation.datasets[].dataset_name", "fsdp.sharding_strategy"} <= paths  # fmt: skip
    assert len(paths) > 150


# ---- read fields whose effect no other test observes -------------------------------------------


def test_logging_steps_is_read(load):
    from oumi_megatron.trainer import OumiMegatronGrpoTrainer

    cfg = load("training.logging_steps=3")
    logged = [s for s in range(1, 11)
              if OumiMegatronGrpoTrainer._is_logging_step(types.SimpleNamespace(cfg=cfg, step=s), 10)]  # fmt: skip
    assert logged == [3, 6, 9, 10]


def test_trust_remote_code_is_read(monkeypatch, tmp_path):
    import huggingface_hub

    from oumi_megatron.model.bridge import resolve_hf_dir

    asked = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        lambda name, allow_patterns: asked.append(allow_patterns) or str(tmp_path))  # fmt: skip
    resolve_hf_dir("org/model", trust_remote_code=False)
    resolve_hf_dir("org/model", trust_remote_code=True)
    assert "*.py" not in asked[0] and "*.py" in asked[1]


def test_tokenizer_name_is_read(load, tmp_path):
    """The prompts are rendered by model.tokenizer_name's tokenizer, not the model's."""
    from oumi_megatron.step.components import build_prompts
    from oumi_megatron.testing.tokenizer import save_tokenizer

    model_dir, other = tmp_path / "model", tmp_path / "other"
    save_tokenizer(model_dir)
    tokenizer = save_tokenizer(other)
    tokenizer.chat_template = "OTHER:{% for m in messages %}{{ m['content'] }}{% endfor %}>"
    tokenizer.save_pretrained(other)
    cfg = load("data.train.datasets=[{dataset_name: arithmetic_synthetic, dataset_kwargs: "
               "{num_examples: 4}}]", f"model.tokenizer_name={other}")  # fmt: skip
    setup = types.SimpleNamespace(cfg=cfg, hf_dir=model_dir, prompts=None)
    _, loader = build_prompts(setup, prompts_per_step=4)
    assert all(p.prompt_text.startswith("OTHER:") for p in next(loader).prompts)

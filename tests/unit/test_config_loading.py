"""Loading recipes into MegatronTrainingConfig: Oumi sections, ours, overrides, round trip."""

from __future__ import annotations

import dataclasses
from io import StringIO
from pathlib import Path

import pytest
from oumi.core.configs import TrainingConfig
from oumi.core.configs.params.training_params import TrainingParams

from oumi_megatron.config import (
    MEGATRON_GRPO,
    ConfigError,
    GrpoParams,
    MegatronParams,
    MegatronTrainingConfig,
    load_config,
)
from oumi_megatron.config.aliases import OUMI_ALIAS_PATHS

RECIPES = sorted((Path(__file__).resolve().parents[2] / "configs" / "recipes").glob("*.yaml"))


def test_sections_are_typed(load) -> None:
    cfg = load()
    assert isinstance(cfg, MegatronTrainingConfig) and isinstance(cfg, TrainingConfig)
    assert isinstance(cfg.megatron, MegatronParams) and isinstance(cfg.grpo, GrpoParams)
    assert cfg.training.trainer_type is MEGATRON_GRPO
    assert cfg.model.model_name == "Qwen/Qwen2.5-0.5B-Instruct"
    assert cfg.data.train.datasets[0].dataset_name == "trl-lib/tldr"
    assert cfg.megatron.tensor_model_parallel_size == 2
    assert cfg.megatron.global_batch_size == 32
    assert cfg.grpo.num_generations == 4
    assert cfg.training.learning_rate == pytest.approx(1e-6)


def test_unset_oumi_training_fields_keep_oumi_defaults(load) -> None:
    cfg = load()
    set_in_yaml = {"trainer_type", "max_steps", "learning_rate", "output_dir"}
    mirrored = {p.removeprefix("training.") for p in OUMI_ALIAS_PATHS}
    defaults = TrainingParams()
    checked = 0
    for f in dataclasses.fields(TrainingParams):
        if f.name in set_in_yaml or f.name in mirrored or f.name == "grpo":
            continue
        assert getattr(cfg.training, f.name) == getattr(defaults, f.name), f.name
        checked += 1
    assert checked > 40
    assert (cfg.training.save_steps, cfg.training.logging_steps, cfg.training.seed) == (500, 50, 42)
    assert cfg.model.torch_dtype_str == "auto" and cfg.fsdp.enable_fsdp is False


def test_dotted_overrides_reach_every_kind_of_section(load) -> None:
    cfg = load(
        "megatron.tensor_model_parallel_size=4",
        "megatron.ddp_config.grad_reduce_in_fp32=true",
        "training.max_steps=3",
        "grpo.num_generations=8",
        "grpo.reward_functions=[a,b]",
        "data.train.datasets[0].dataset_name=openai/gsm8k",
        "--model.trust_remote_code=true",
    )
    assert cfg.megatron.tensor_model_parallel_size == 4
    assert cfg.megatron.ddp_config.grad_reduce_in_fp32 is True
    assert cfg.training.max_steps == 3
    assert cfg.grpo.num_generations == 8
    assert cfg.grpo.reward_functions == ["a", "b"]
    assert cfg.data.train.datasets[0].dataset_name == "openai/gsm8k"
    assert cfg.model.trust_remote_code is True


def test_later_override_wins(load) -> None:
    cfg = load("training.max_steps=3", "training.max_steps=7")
    assert cfg.training.max_steps == 7


def test_yaml_round_trip(load, tmp_path: Path) -> None:
    cfg = load("grpo.temperature=1.5", "megatron.optimizer_config.weight_decay=0.1")
    path = tmp_path / "saved.yaml"
    cfg.to_yaml(path)
    text = path.read_text()
    assert "megatron:" in text and "tensor_model_parallel_size: 2" in text
    assert "trainer_type: MEGATRON_GRPO" in text
    reloaded = load_config(path)
    assert reloaded == cfg
    assert reloaded.grpo.temperature == 1.5  # Above Oumi's own cap of 1.0: ours applies.
    assert MegatronTrainingConfig.from_yaml(path) == cfg
    assert MegatronTrainingConfig.from_str(text) == cfg


def test_from_yaml_and_arg_list_applies_overrides(tmp_path: Path, grpo_yaml: str) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(grpo_yaml)
    cfg = MegatronTrainingConfig.from_yaml_and_arg_list(str(path), ["training.max_steps=2"])
    assert cfg.training.max_steps == 2


def test_to_yaml_keeps_our_sections_without_warnings(load, caplog) -> None:
    cfg = load()
    buf = StringIO()
    cfg.to_yaml(buf)
    assert "num_generations: 4" in buf.getvalue()
    with caplog.at_level("WARNING"):
        cfg.to_yaml(StringIO())
    assert "non-primitive values were removed" not in caplog.text


def test_loader_writes_nothing(tmp_path: Path, grpo_yaml: str, monkeypatch) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(grpo_yaml)
    monkeypatch.chdir(tmp_path)
    load_config(recipe, ["training.output_dir=out/run"])
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["recipe.yaml"]


def test_interpolation_is_kept_literally_like_oumi(load, grpo_yaml: str) -> None:
    text = grpo_yaml.replace("max_steps: 10", "max_steps: 10\n  logging_dir: '${not_a_key}'")
    text = text.replace("[gsm8k_accuracy]", "['${x}']")
    cfg = load(text=text)
    assert cfg.training.logging_dir == "${not_a_key}"
    assert cfg.grpo.reward_functions == ["${x}"]


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_every_recipe_loads(recipe: Path) -> None:
    assert load_config(recipe).training.trainer_type.name.startswith("MEGATRON_")


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match=r"Config file not found: 'nope\.yaml'"):
        load_config("nope.yaml")


def test_override_without_equals_sign(load) -> None:
    with pytest.raises(ConfigError, match=r"Invalid override 'training\.max_steps'\. Fix: write"):
        load("training.max_steps")


def test_missing_model_name(load) -> None:
    text = "training: {trainer_type: MEGATRON_GRPO}\ngrpo: {reward_functions: [r]}\n"
    with pytest.raises(ConfigError, match=r"'model\.model_name' is required but not set"):
        load(text=text)


def test_oumi_field_with_wrong_type(load) -> None:
    with pytest.raises(ConfigError) as err:
        load("training.max_steps=abc")
    assert str(err.value) == (
        "Invalid value at 'training.max_steps': "
        "Value 'abc' of type 'str' could not be converted to Integer"
    )


def test_trainer_type_must_be_spelled_as_member_name(load) -> None:
    with pytest.raises(
        ConfigError, match=r"training\.trainer_type.*expected one of.*MEGATRON_GRPO"
    ):
        load("training.trainer_type=megatron_grpo")


def test_yaml_must_be_a_mapping(load) -> None:
    with pytest.raises(ConfigError, match="must hold a mapping of sections"):
        load(text="- a\n- b\n")

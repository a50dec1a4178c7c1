"""Settings defined by both Oumi and us: merge, conflicts, mirroring, defaults."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest
from oumi.core.configs.params.grpo_params import GrpoParams as OumiGrpoParams
from oumi.core.configs.params.training_params import TrainingParams

from oumi_megatron.config import ConfigError, GrpoParams, MegatronParams, MegatronTrainingConfig
from oumi_megatron.config.aliases import ALIASES, _owner
from oumi_megatron.config.oumi_fields import REPLACED_OUMI_FIELDS


def test_training_grpo_alone_is_used(load) -> None:
    cfg = load("training.grpo.temperature=0.7", "training.grpo.max_completion_length=64")
    assert cfg.grpo.temperature == 0.7
    assert cfg.grpo.max_completion_length == 64


def test_a_setting_lives_in_one_place(load) -> None:
    """Read from Oumi's path into ours; Oumi's field stays at its default (no copy)."""
    from oumi.core.configs import TrainingParams as Defaults

    cfg = load("training.grpo.temperature=0.5", "training.max_grad_norm=0.25")
    assert cfg.grpo.temperature == 0.5 and cfg.megatron.optimizer_config.clip_grad == 0.25
    oumi = Defaults()
    assert cfg.training.grpo.temperature == oumi.grpo.temperature
    assert cfg.training.max_grad_norm == oumi.max_grad_norm
    assert cfg.training.reward_functions is None  # Oumi's check for TRL trainers never sees it


def test_both_grpo_sections_merge_field_by_field(load) -> None:
    cfg = load("training.grpo.epsilon=0.3", "grpo.temperature=1.0")
    assert (cfg.grpo.epsilon, cfg.grpo.temperature, cfg.grpo.num_generations) == (0.3, 1.0, 4)


def test_same_value_in_both_places_is_fine(load) -> None:
    assert load("training.grpo.num_generations=4").grpo.num_generations == 4


def test_conflict_names_both_paths(load) -> None:
    with pytest.raises(ConfigError) as err:
        load("training.grpo.num_generations=8")
    assert str(err.value) == (
        "Conflicting values for one setting: 'grpo.num_generations' = 4 but "
        "'training.grpo.num_generations' = 8. Fix: set it in one place only "
        "('grpo.num_generations' is canonical), or give both the same value."
    )


def test_training_reward_functions_move_to_grpo(load, grpo_yaml: str) -> None:
    text = grpo_yaml.replace("  reward_functions: [gsm8k_accuracy]\n", "")
    cfg = load("training.reward_functions=[countdown]", text=text)
    assert cfg.grpo.reward_functions == ["countdown"]


def test_per_device_batch_is_micro_batch(load, grpo_yaml: str) -> None:
    text = grpo_yaml.replace("  micro_batch_size: 2\n", "")
    assert load("training.per_device_train_batch_size=4", text=text).megatron.micro_batch_size == 4


def test_per_device_batch_disagreeing_with_micro_batch(load) -> None:
    with pytest.raises(
        ConfigError,
        match=(r"'megatron\.micro_batch_size' = 2 but 'training\.per_device_train_batch_size' = 8"),
    ):
        load("training.per_device_train_batch_size=8")


def test_oumi_optimizer_fields_feed_megatron(load) -> None:
    cfg = load(
        "training.weight_decay=0.1",
        "training.max_grad_norm=null",
        "training.warmup_steps=5",
        "training.lr_scheduler_type=cosine",
    )
    opt = cfg.megatron.optimizer_config
    assert (opt.weight_decay, opt.clip_grad, opt.lr_warmup_steps) == (0.1, 0.0, 5)
    assert opt.lr_decay_style == "cosine"


def test_unsupported_oumi_lr_scheduler(load) -> None:
    with pytest.raises(ConfigError) as err:
        load("training.lr_scheduler_type=cosine_with_restarts")
    assert str(err.value).startswith(
        "Unsupported value for 'training.lr_scheduler_type': 'cosine_with_restarts'. "
        "Megatron trainers support only constant, linear, cosine."
    )


def test_invalid_value_under_oumi_path_uses_our_rule(load) -> None:
    assert load("training.grpo.temperature=1.5").grpo.temperature == 1.5  # Oumi caps at 1.0
    with pytest.raises(ConfigError, match=r"Invalid value for 'grpo\.temperature': 3\.0"):
        load("training.grpo.temperature=3.0")


def test_programmatic_construction_reads_oumi_fields_once() -> None:
    training = TrainingParams(weight_decay=0.2, grpo=OumiGrpoParams(num_generations=6))
    cfg = MegatronTrainingConfig(training=training, grpo={"temperature": 1.2})
    assert cfg.megatron.optimizer_config.weight_decay == 0.2
    assert cfg.grpo.num_generations == 6 and cfg.grpo.temperature == 1.2
    assert (cfg.training.weight_decay, cfg.training.grpo.num_generations) == (0.0, None)
    again = dataclasses.replace(cfg)  # post-init again: nothing left to merge or to conflict
    assert again.grpo.num_generations == 6 and again.megatron.optimizer_config.weight_decay == 0.2


def test_programmatic_conflict() -> None:
    with pytest.raises(ConfigError, match="'grpo.epsilon' = 0.1 but 'training.grpo.epsilon' = 0.3"):
        MegatronTrainingConfig(
            training=TrainingParams(grpo=OumiGrpoParams(epsilon=0.3)),
            grpo=GrpoParams(epsilon=0.1),
        )


def _oumi_default(path: str):
    from oumi.core.configs import ModelParams

    section, _, rest = path.partition(".")
    owner, name = _owner({"training": TrainingParams, "model": ModelParams}[section](), rest)
    return getattr(owner, name)


def _our_default(path: str):
    section, *rest = path.split(".")
    model = {"grpo": GrpoParams, "megatron": MegatronParams}[section]
    for part in rest[:-1]:
        model = model.model_fields[part].annotation
    return model.model_fields[rest[-1]].get_default(call_default_factory=True)


# Aliases where Oumi's default is a concrete value (not None = "TRL decides"), except the
# documented micro-batch exception (1 here, 8 in Oumi).
CONCRETE_DEFAULT_ALIASES = [
    a
    for a in ALIASES
    if a.oumi != "training.per_device_train_batch_size"
    and not (_oumi_default(a.oumi) is None and a.oumi_none_is_unset)
]


@pytest.mark.parametrize("alias", CONCRETE_DEFAULT_ALIASES, ids=lambda a: a.ours)
def test_our_default_equals_oumis_default(alias) -> None:
    assert alias.to_ours(_oumi_default(alias.oumi)) == _our_default(alias.ours)


def test_defaults_match_trl_defaults_that_oumi_documents() -> None:
    grpo = GrpoParams()
    assert (grpo.num_generations, grpo.max_prompt_length, grpo.max_completion_length) == (
        8,
        512,
        256,
    )


def test_every_oumi_grpo_field_is_either_shared_or_rejected() -> None:
    handled = {a.oumi for a in ALIASES} | set(REPLACED_OUMI_FIELDS)
    oumi_fields = {f"training.grpo.{name}" for name, _ in OumiGrpoParams()}
    assert oumi_fields <= handled, sorted(oumi_fields - handled)


def _count_validations(monkeypatch) -> Counter:
    """Counts ``model_validate`` per section model (what validating a section runs)."""
    calls: Counter = Counter()
    for model in (MegatronParams, GrpoParams):
        original = model.model_validate.__func__  # type: ignore[attr-defined]

        def counted(cls, *args, _original=original, **kwargs):
            calls[cls.__name__] += 1
            return _original(cls, *args, **kwargs)

        monkeypatch.setattr(model, "model_validate", classmethod(counted))
    return calls


def test_each_section_is_validated_once_from_yaml(load, monkeypatch) -> None:
    calls = _count_validations(monkeypatch)
    cfg = load("training.grpo.temperature=0.7", "training.weight_decay=0.1")
    assert (cfg.grpo.temperature, cfg.megatron.optimizer_config.weight_decay) == (0.7, 0.1)
    assert calls == {"MegatronParams": 1, "GrpoParams": 1}


def test_each_section_is_validated_once_from_python(monkeypatch) -> None:
    calls = _count_validations(monkeypatch)
    cfg = MegatronTrainingConfig(training=TrainingParams(weight_decay=0.2),
                                 grpo={"temperature": 1.2})  # fmt: skip
    assert (cfg.grpo.temperature, cfg.megatron.optimizer_config.weight_decay) == (1.2, 0.2)
    assert calls == {"MegatronParams": 1, "GrpoParams": 1}
    dataclasses.replace(cfg)  # valid instances, nothing to move: kept as they are
    assert calls == {"MegatronParams": 1, "GrpoParams": 1}

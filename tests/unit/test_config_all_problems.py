"""Every problem of a config is reported together, before any work; rewards import from files."""

from __future__ import annotations

from pathlib import Path

import pytest

from oumi_megatron.config import ConfigError, ModelShape, validate_config
from oumi_megatron.config.errors import Problems

CONFIGS = Path(__file__).resolve().parents[1] / "data" / "configs"
DENSE = ModelShape(
    num_layers=24, num_attention_heads=16, num_kv_heads=4, num_experts=None, vocab_size=32000
)


def test_the_quick_start_on_one_process_names_every_problem(monkeypatch):
    """The 70B TP8×PP2 quick start, one process, model not downloadable: one message naming
    the model, the missing reward and the world size."""
    from oumi_megatron.launch import prepare_run

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("WORLD_SIZE", "1")
    with pytest.raises(ConfigError) as error:
        prepare_run(str(CONFIGS / "quickstart_70b.yaml"), [], for_training=True)
    message = str(error.value)
    assert message.startswith("3 problems in the config:\n  1. model.model_name")
    assert "2. grpo.reward_functions is empty" in message
    assert (
        "3. world_size (1) must be divisible by the product of all model parallel sizes (16)"
        in message
    )
    assert len(error.value.problems) == 3


def test_static_layout_and_data_problems_come_together(grpo_yaml, tiny_model_dir):
    from oumi_megatron.config import load_config_from_str

    overrides = [
        f"model.model_name={tiny_model_dir}",
        "megatron.optimizer_config.min_lr=1.0",
        "megatron.global_batch_size=30",
        "data.train.datasets[0].dataset_path=/no/such/file.jsonl",
        "grpo.reward_functions=[no_such_module_xyz:fn]",
    ]
    cfg = load_config_from_str(grpo_yaml, overrides, check=False)  # as `train` loads it
    with pytest.raises(ConfigError) as error:
        validate_config(cfg, 8, DENSE, run_oumi_finalize=True)
    problems = error.value.problems
    starts = [p.split(" ")[0] for p in problems]
    assert starts == [
        "megatron.optimizer_config.min_lr",
        "megatron.global_batch_size",
        "grpo.reward_functions:",
        "data.train.datasets[0].dataset_path",
    ], problems
    assert "Fix: lower min_lr" in problems[0]


def test_unused_oumi_fields_are_refused_together(load):
    with pytest.raises(ConfigError) as error:
        load("model.attn_implementation=sdpa", "training.per_device_eval_batch_size=5",
             "data.train.mixture_strategy=all_exhausted")  # fmt: skip
    assert error.value.problems == [
        "data.train.mixture_strategy ('all_exhausted') is not used by Megatron trainers. Fix: "
        "datasets are concatenated; remove it.",
        "model.attn_implementation ('sdpa') is not used by Megatron trainers. Fix: Megatron "
        "picks its attention kernel; remove it.",
        "training.per_device_eval_batch_size (5) is not used by Megatron trainers. Fix: "
        "evaluation generates with the rollout engines, which batch themselves; remove it.",
    ]


def test_one_problem_reads_as_before():
    error = ConfigError.of(["a.b (3) is wrong. Fix: 4."])
    assert str(error) == "a.b (3) is wrong. Fix: 4." and error.problems == [str(error)]


def test_problems_numbered_and_deduplicated():
    problems = Problems()
    problems.add("x is bad.")
    problems.check(lambda: (_ for _ in ()).throw(ConfigError("x is bad.")))
    problems.check(lambda: (_ for _ in ()).throw(ConfigError("y\nspans lines.")))
    assert problems.check(lambda: 7) == 7
    with pytest.raises(ConfigError) as error:
        problems.raise_if_any()
    assert (
        str(error.value) == "2 problems in the config:\n  1. x is bad.\n  2. y\n     spans lines."
    )


# ---- rewards from a file or the working directory, without PYTHONPATH ----------------------------

REWARD = "def by_length(completions, **kwargs):\n    return [float(len(c)) for c in completions]\n"


def test_reward_from_a_file_path(tmp_path, monkeypatch):
    from oumi_megatron.rewards import resolve_reward_function

    (tmp_path / "rewards").mkdir()
    (tmp_path / "rewards" / "mine.py").write_text(REWARD)
    monkeypatch.chdir(tmp_path)
    relative = resolve_reward_function("rewards/mine.py:by_length")
    absolute = resolve_reward_function(f"{tmp_path}/rewards/mine.py:by_length")
    assert relative(["ab", "abcd"]) == [2.0, 4.0]
    assert absolute.fn is relative.fn  # one module per file


def test_reward_module_in_the_working_directory(tmp_path, monkeypatch):
    from oumi_megatron.rewards import resolve_reward_function

    (tmp_path / "my_reward_mod_wd.py").write_text(REWARD)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.path", [p for p in __import__("sys").path if p not in ("", ".")])
    assert resolve_reward_function("my_reward_mod_wd:by_length")(["abc"]) == [3.0]


def test_reward_problems_say_where_they_looked(tmp_path, monkeypatch):
    from oumi_megatron.rewards import RewardResolutionError, resolve_reward_function

    monkeypatch.chdir(tmp_path)
    with pytest.raises(RewardResolutionError, match=r"cannot import module 'absent_mod_q'.*"
                       r"give the file: 'path/to/absent_mod_q.py:function'"):  # fmt: skip
        resolve_reward_function("absent_mod_q:fn")
    with pytest.raises(RewardResolutionError, match="file 'nope/r.py' does not exist"):
        resolve_reward_function("nope/r.py:fn")
    (tmp_path / "broken.py").write_text("raise RuntimeError('boom')\n")
    with pytest.raises(RewardResolutionError, match="importing 'broken.py' failed: RuntimeError"):
        resolve_reward_function("./broken.py:fn")


def test_chat_template_names_oumi_templates(load):
    assert load("model.chat_template=zephyr").model.chat_template == "zephyr"
    with pytest.raises(ConfigError, match=r"model.chat_template \('zephir'\) is not one of Oumi's "
                       r"chat templates. Fix: use one of .*zephyr"):  # fmt: skip
        load("model.chat_template=zephir")


VALIDATION = "data.validation.datasets=[{dataset_name: arithmetic_synthetic}]"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ([VALIDATION], "data.validation is set but training.eval_strategy is 'no'"),
        (["training.eval_strategy=steps"], "training.eval_strategy is 'steps' but data.validation"),
        ([VALIDATION, "training.eval_strategy=epoch"], r"training.eval_strategy \('epoch'\) is not"),
        ([VALIDATION, "training.eval_strategy=steps", "training.eval_steps=0.5"],
         r"training.eval_steps \(0.5\) must be a whole number"),
    ],
)  # fmt: skip
def test_evaluation_settings_act_together_or_are_refused(load, overrides, message):
    with pytest.raises(ConfigError, match=message):
        load(*overrides)


def test_evaluation_settings_load(load):
    cfg = load(VALIDATION, "training.eval_strategy=steps", "training.eval_steps=5")
    assert cfg.training.eval_steps == 5 and len(cfg.data.validation.datasets) == 1


def test_replica_share_is_contiguous_and_complete():
    from oumi_megatron.step.evaluate import replica_share

    for prompts in range(0, 12):
        for replicas in (1, 2, 3, 5):
            shares = [replica_share(prompts, replicas, r) for r in range(replicas)]
            assert sum(shares, []) == list(range(prompts))
            assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_key_and_value_problems_of_every_section_come_together(load):
    with pytest.raises(ConfigError) as error:
        load("training.max_stepz=3", "megatron.tensor_parallel=2",
             "megatron.micro_batch_size=0", "grpo.temprature=0.5")  # fmt: skip
    problems = error.value.problems
    assert problems[0] == "Unknown key 'training.max_stepz'. Did you mean 'max_steps'?"
    assert any(p.startswith("Unknown key 'megatron.tensor_parallel'.") for p in problems)
    assert any("megatron.micro_batch_size" in p for p in problems)
    assert any(p.startswith("Unknown key 'grpo.temprature'. Did you mean 'temperature'")
               for p in problems)  # fmt: skip
    assert len(problems) == 4


def test_missing_validation_file_is_named(grpo_yaml, tiny_model_dir):
    from oumi_megatron.config import load_config_from_str

    cfg = load_config_from_str(grpo_yaml, [
        f"model.model_name={tiny_model_dir}", "training.eval_strategy=steps",
        "data.validation.datasets=[{dataset_name: jsonl, dataset_path: /no/held_out.jsonl}]",
    ])  # fmt: skip
    with pytest.raises(ConfigError, match=r"data.validation.datasets\[0\].dataset_path "
                       r"\('/no/held_out.jsonl'\) does not exist"):  # fmt: skip
        validate_config(cfg, 8, DENSE, run_oumi_finalize=True)

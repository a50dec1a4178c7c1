"""Late failures are caught by the validation pass (`run.prepare_training`): one message each,
naming the field, and nothing is converted or written."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from oumi_megatron.config import ConfigError, load_config
from oumi_megatron.run import prepare_training

RECIPE = Path(__file__).resolve().parents[2] / "configs" / "recipes" / "tiny_grpo_cpu.yaml"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    from oumi_megatron.testing.tiny_models import build_tiny_model

    return build_tiny_model("llama", tmp_path_factory.mktemp("m") / "llama", num_layers=2)


def _prepare(model_dir: Path, out: Path, *overrides: str):
    cfg = load_config(str(RECIPE), [f"model.model_name={model_dir}",
                                    f"training.output_dir={out}", *overrides], check=False)  # fmt: skip
    return prepare_training(cfg)


def _refused(model_dir: Path, out: Path, *overrides: str) -> str:
    with pytest.raises(ConfigError) as error:
        _prepare(model_dir, out, *overrides)
    assert not (out / "megatron_checkpoint").exists() and not (out / "checkpoints").exists()
    return str(error.value)


def _jsonl(tmp_path: Path, text: str) -> str:
    path = tmp_path / "prompts.jsonl"
    path.write_text(text)
    return f"data.train.datasets=[{{dataset_name: jsonl, dataset_path: {path}}}]"


def test_a_valid_run_passes_and_keeps_the_prompts_it_read(model_dir, tmp_path):
    setup = _prepare(model_dir, tmp_path / "out")
    tokenizer, prompts = setup.prompts
    assert len(prompts) == 2048 and tokenizer is not None


def test_malformed_empty_and_fieldless_data_files(model_dir, tmp_path):
    out = tmp_path / "out"
    assert "invalid JSON" in _refused(model_dir, out, _jsonl(tmp_path, '{"prompt": "a"}\n{oops\n'))
    assert "has no rows" in _refused(model_dir, out, _jsonl(tmp_path, "\n"))
    message = _refused(model_dir, out, _jsonl(tmp_path, '{"question_text": "2+2?"}\n'))
    assert message.startswith("data.train.datasets:") and "prompt" in message


def test_model_and_length_problems(model_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    (broken / "config.json").write_text("{")
    assert "cannot read" in _refused(broken, tmp_path / "out")
    message = _refused(model_dir, tmp_path / "out", "grpo.max_completion_length=600",
                       "megatron.max_tokens_per_microbatch=1024")  # fmt: skip
    assert "exceeds the model's max_position_embeddings (512)" in message
    assert "at most" in message


def test_learning_rate_reward_and_output_dir(model_dir, tmp_path):
    message = _refused(model_dir, tmp_path / "out", "training.learning_rate=-1e-6")
    assert "training.learning_rate (-1e-06) must be > 0" in message and "min_lr" not in message
    message = _refused(model_dir, tmp_path / "out", "grpo.reward_functions=[no_such_reward]",
                       "grpo.reward_weights=null", "grpo.accuracy_reward=null")  # fmt: skip
    assert "no_such_reward" in message
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert "cannot be written" in _refused(model_dir, blocker / "out")


def test_run_directory_problems_come_in_the_same_message_as_config_ones(model_dir, tmp_path):
    out = tmp_path / "out"
    (out / "checkpoints" / "step_10").mkdir(parents=True)  # another run's results
    with pytest.raises(ConfigError) as error:
        _prepare(model_dir, out, "training.learning_rate=-1e-6")
    message = str(error.value)
    assert not (out / "megatron_checkpoint").exists()
    assert message.startswith("2 problems in the config:")
    assert "training.learning_rate (-1e-06) must be > 0" in message
    assert "holds another run's results" in message

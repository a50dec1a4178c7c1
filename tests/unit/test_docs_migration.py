"""The two recipes on docs/migration_verl_grpo.md: Oumi parses the VERL_GRPO one, ours validates
the MEGATRON_GRPO one, and the page's claims about the differences hold."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "migration_verl_grpo.md"
# Qwen2.5-0.5B-Instruct's config.json: 24 layers, 14 heads / 2 KV heads, 32,768 positions.
QWEN2_5_0_5B = dict(
    num_layers=24,
    num_attention_heads=14,
    num_kv_heads=2,
    num_experts=None,
    vocab_size=151936,
    max_positions=32768,
)


def _yaml_block(name: str) -> str:
    text = PAGE.read_text()
    found = re.search(
        rf"<!-- BEGIN YAML {name} -->\s*```yaml\n(.*?)```\s*<!-- END YAML -->", text, re.DOTALL
    )
    assert found, f"no YAML block {name!r} on {PAGE.name}"
    return found.group(1)


@pytest.fixture
def recipe(tmp_path: Path):
    def write(name: str) -> Path:
        path = tmp_path / f"{name}.yaml"
        path.write_text(_yaml_block(name))
        return path

    return write


def test_oumi_parses_the_verl_grpo_recipe(recipe) -> None:
    from oumi.core.configs import TrainerType, TrainingConfig

    cfg = TrainingConfig.from_yaml(recipe("verl_grpo"))
    assert cfg.training.trainer_type == TrainerType.VERL_GRPO
    overrides = cfg.training.verl_config_overrides["actor_rollout_ref"]
    assert overrides["rollout"]["n"] == 16 and overrides["actor"]["ppo_mini_batch_size"] == 64


def test_megatron_grpo_recipe_loads_and_validates(recipe) -> None:
    from oumi_megatron.config import ModelShape, load_config, validate_config

    cfg = load_config(recipe("megatron_grpo"))
    layout = validate_config(cfg, world_size=1, model_shape=ModelShape(**QWEN2_5_0_5B))
    # verl: 256 prompts per step, mini-batches of 64 prompts x n=16, micro batch 4 per GPU.
    assert layout.prompts_per_step == 256
    assert layout.global_batch_size == 64 * 16
    assert layout.num_microbatches == 1024 // 4
    assert cfg.grpo.num_generations == 16 and cfg.grpo.beta == 0.001
    assert cfg.grpo.kl_estimator == "low_var_kl"
    assert cfg.megatron.inference_backend == "vllm"


def test_verl_recipe_with_megatron_trainer_names_each_field(recipe) -> None:
    from oumi_megatron.config import ConfigError, load_config

    with pytest.raises(ConfigError) as error:
        load_config(recipe("verl_grpo"), ["training.trainer_type=MEGATRON_GRPO"])
    problems = error.value.problems
    assert len(problems) == 4
    page = PAGE.read_text()
    for field, fix in (
        ("training.enable_gradient_checkpointing (True)", "recompute_granularity instead."),
        ("training.grpo.use_vllm (True)", "use megatron.inference_backend: vllm instead."),
        ("training.grpo.vllm_gpu_memory_utilization (0.4)", "remove it (TRL-only setting)."),
        ("training.verl_config_overrides ({", "Fix: remove it."),
    ):
        assert any(p.startswith(field) and p.endswith(fix) for p in problems), field
        assert field in page


def test_verl_style_reward_is_refused_with_the_builtin() -> None:
    from oumi_megatron.rewards import RewardResolutionError, resolve_reward_function

    with pytest.raises(RewardResolutionError) as error:
        resolve_reward_function("gsm8k")
    assert str(error.value) in PAGE.read_text()


def test_prompt_template_and_reward_reproduce_oumi_gsm8k(tmp_path: Path) -> None:
    import json

    import yaml

    from oumi_megatron.data.prompts import build_prompt_dataset
    from oumi_megatron.rewards.gsm8k import gsm8k_accuracy
    from oumi_megatron.testing.tokenizer import build_tokenizer

    recipe = yaml.safe_load(_yaml_block("megatron_grpo"))
    dataset = recipe["data"]["train"]["datasets"][0]
    row = {"question": "What is 6 x 12?", "answer": "6 x 12 = <<6*12=72>>72\n#### 72"}
    path = tmp_path / "gsm8k.jsonl"
    path.write_text(json.dumps(row) + "\n")
    spec = {
        "dataset_name": "jsonl",
        "dataset_path": str(path),
        "dataset_kwargs": dataset["dataset_kwargs"],
    }
    prompts = build_prompt_dataset(spec, build_tokenizer(), 512)
    # Oumi's Gsm8kGrpoDataset: f"{question} {instruction}" as the user message.
    instruction = 'Let\'s think step by step and output the final answer after "####".'
    assert prompts[0].messages[-1]["content"] == f"{row['question']} {instruction}"
    kwargs = recipe["grpo"]["reward_function_kwargs"]["gsm8k_accuracy"]
    completions = ["6 x 12 = 72\n#### 72", "The answer is 72.", "#### 71"]
    scores = gsm8k_accuracy(completions, answer=[prompts[0].columns["answer"]] * 3, **kwargs)
    assert scores == [1.0, 0.0, 0.0]  # strict, as Oumi's gsm8k: only "#### N" counts

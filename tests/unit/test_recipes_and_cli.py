"""Every shipped recipe loads; the CLI validates before doing any work."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RECIPES = sorted((REPO / "configs" / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.stem for r in RECIPES])
def test_recipe_loads(recipe: Path) -> None:
    from oumi_megatron.config import MegatronParams, load_config

    cfg = load_config(recipe)
    assert isinstance(cfg.megatron, MegatronParams)


def test_cli_help_needs_no_heavy_imports() -> None:
    import subprocess
    import sys

    code = "import sys; from oumi_megatron.cli import build_parser; build_parser(); print(sorted(m for m in ('oumi', 'megatron', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_bad_layout_fails_before_any_work(tmp_path, monkeypatch, tiny_model_dir) -> None:
    from oumi_megatron.cli import main

    output_dir = tmp_path / "out"
    monkeypatch.setenv("WORLD_SIZE", "2")
    code = main(
        [
            "convert",
            "-c",
            str(REPO / "configs" / "recipes" / "tiny_llama_tp2_cpu.yaml"),
            f"model.model_name={tiny_model_dir}",
            f"training.output_dir={output_dir}",
            "megatron.tensor_model_parallel_size=4",
        ]
    )
    assert code == 2
    assert not output_dir.exists(), "nothing may be written before validation passes"


def test_bad_layout_message_names_fields(tmp_path, monkeypatch, tiny_model_dir) -> None:
    from oumi_megatron.config import ConfigError
    from oumi_megatron.launch import prepare_run

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match=r"world_size \(2\) must be divisible .* \(4\)"):
        prepare_run(
            str(REPO / "configs" / "recipes" / "tiny_llama_tp2_cpu.yaml"),
            [f"model.model_name={tiny_model_dir}", "megatron.tensor_model_parallel_size=4"],
            for_training=False,
        )


def test_oumi_style_overrides_in_every_form() -> None:
    from oumi_megatron.cli import build_parser, oumi_style_overrides

    argv = ["train", "-c", "r.yaml", "--training.max_steps", "3", "--training.seed=4",
            "grpo.beta=0", "--resume", "latest", "--megatron.rollout_nodes", "1"]  # fmt: skip
    args = build_parser().parse_args(oumi_style_overrides(argv))
    assert args.overrides == ["training.max_steps=3", "training.seed=4", "grpo.beta=0",
                              "megatron.rollout_nodes=1"]  # fmt: skip
    assert args.resume == "latest"
    with pytest.raises(SystemExit, match="--training.max_steps needs a value"):
        oumi_style_overrides(["train", "--training.max_steps"])

"""Every model-size recipe validates, for its intended world size, against the model's real
architecture (shipped config.json, no weights), and fits its GPUs by the planner's estimate;
a broken copy of each fails with the named error."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from oumi_megatron.planner.hardware import hardware

REPO = Path(__file__).resolve().parents[2]
RECIPES = REPO / "configs" / "recipes"

# recipe: (GPUs, GPU kind, shipped architecture)
SIZED = {
    "grpo-qwen2.5-1.5b-1n1g-tp1": (1, "h100", "qwen2.5-1.5b"),
    "grpo-llama3.1-8b-1n8g-tp2": (8, "h100", "llama3.1-8b"),
    "grpo-llama3.1-70b-2n16g-tp8pp2": (16, "h100", "llama3.1-70b"),
    "grpo-llama3.1-405b-32n256g-tp8pp16cp2vpp2": (256, "h200", "llama3.1-405b"),
    "grpo-qwen3-30b-a3b-1n8g-ep8": (8, "h100", "qwen3-30b-a3b"),
}


def test_every_model_size_recipe_is_listed() -> None:
    shipped = {p.stem for p in RECIPES.glob("grpo-*.yaml")}
    assert shipped == set(SIZED)


def _nodes_and_gpus(name: str) -> tuple[int, int]:
    """``2n16g`` in the name: nodes and GPUs."""
    token = next(part for part in name.split("-") if part.endswith("g") and "n" in part)
    nodes, gpus = token[:-1].split("n")
    return int(nodes), int(gpus)


@pytest.mark.parametrize("name", sorted(SIZED))
def test_recipe_is_valid_and_fits(name, monkeypatch) -> None:
    from oumi_megatron.planner.recipe import recipe_plan

    gpus, gpu, arch = SIZED[name]
    nodes, named_gpus = _nodes_and_gpus(name)
    assert named_gpus == gpus and gpus % nodes == 0  # the name says the world size
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(gpus // nodes))
    outcome = recipe_plan(str(RECIPES / f"{name}.yaml"), [], gpus, hardware(gpu, None, 8), arch)
    assert outcome.fits, "\n".join(outcome.lines)
    assert outcome.memory.peak > 0.3 * hardware(gpu, None, 8).memory_bytes  # uses its GPUs


BREAKS = {
    # A layout that does not divide the world: named fields and the product.
    "megatron.context_parallel_size=3": "must be divisible by the product of all model parallel",
    # A typo in a field name: named with a did-you-mean.
    "megatron.tensor_model_paralel_size=2": "tensor_model_paralel_size",
}


@pytest.mark.parametrize("name", sorted(SIZED))
@pytest.mark.parametrize("override", sorted(BREAKS))
def test_broken_copy_fails_with_named_error(name, override, monkeypatch, tmp_path) -> None:
    from oumi_megatron.config import ConfigError
    from oumi_megatron.planner.recipe import recipe_plan

    gpus, gpu, arch = SIZED[name]
    broken = tmp_path / f"{name}.yaml"
    key, value = override.split("=")
    section, field = key.split(".")
    text = (RECIPES / f"{name}.yaml").read_text()
    assert f"\n{section}:\n" in text
    line = re.compile(rf"^  {field}: .*$", re.MULTILINE)
    if line.search(text):  # the recipe sets it: change the value
        text = line.sub(f"  {field}: {value}", text, count=1)
    else:
        text = text.replace(f"\n{section}:\n", f"\n{section}:\n  {field}: {value}\n", 1)
    broken.write_text(text)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(min(gpus, 8)))
    with pytest.raises(ConfigError, match=BREAKS[override]):
        recipe_plan(str(broken), [], gpus, hardware(gpu, None, 8), arch)


def test_405b_recipe_does_not_fit_80gb_cards(monkeypatch) -> None:
    """Its colocated engine's weights (94.5 GiB per GPU at rollout TP8) need 141 GB cards."""
    from oumi_megatron.planner.recipe import recipe_plan

    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    name = "grpo-llama3.1-405b-32n256g-tp8pp16cp2vpp2"
    outcome = recipe_plan(str(RECIPES / f"{name}.yaml"), [], 256, hardware("h100", None, 8))
    assert not outcome.fits
    assert any("rollout engine needs 94.5 GiB" in line for line in outcome.lines)

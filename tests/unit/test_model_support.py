"""Support is declared (model/support.py) and backed by tests: every declared layout is a
case of the HF ⇄ Megatron parity test, every trained layout a case of the GRPO training test;
an undeclared architecture fails validation in seconds with one named message."""

from __future__ import annotations

import ast
import json
import time
from pathlib import Path

import pytest
from _scripts import load_script

from oumi_megatron.model.support import FAMILIES, NOT_YET, check_supported
from oumi_megatron.parallel.layout import ParallelLayout
from oumi_megatron.parallel.pipeline_split import PipelineSplit
from oumi_megatron.testing.tiny_models import ARCHITECTURES

ROOT = Path(__file__).resolve().parents[2]
INTEGRATION = ROOT / "tests" / "integration"


def _module_constant(path: Path, name: str, namespace: dict | None = None):
    """A module-level constant of a test module, without importing the module (heavy)."""
    tree = ast.parse(path.read_text())
    node = next(n for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == name)
    return eval(compile(ast.Expression(node.value), str(path), "eval"), namespace or {})


def test_declared_layouts_are_parity_tested() -> None:
    cases = _module_constant(
        INTEGRATION / "parity_worker.py",
        "CASES",
        {"ParallelLayout": ParallelLayout, "PipelineSplit": PipelineSplit},
    )
    tested = {(arch, str(layout)) for arch, layout in cases}
    for family in FAMILIES:
        for layout in family.layouts:
            assert (family.fixture, str(layout)) in tested, (family.name, str(layout))
    fixtures = {f.fixture for f in FAMILIES}
    assert {arch for arch, _ in tested} <= fixtures, "a parity fixture of no declared family"
    assert fixtures <= set(ARCHITECTURES)


def test_declared_training_layouts_are_trained() -> None:
    path = INTEGRATION / "test_grpo_train.py"
    layouts, models = _module_constant(path, "LAYOUTS"), _module_constant(path, "MODELS")
    for family in FAMILIES:
        for name in family.trained:
            assert name in layouts, (family.name, name)
            assert models.get(name, "llama") == family.fixture, (family.name, name)


def test_support_matrix_doc_is_up_to_date() -> None:
    gen = load_script("gen_support_matrix")
    text = gen.DOC.read_text()
    assert gen.updated(text) == text, "run: python scripts/gen_support_matrix.py"


@pytest.mark.parametrize("architecture", sorted(NOT_YET))
def test_known_unsupported_architectures_are_refused_with_reason(architecture) -> None:
    with pytest.raises(ValueError) as error:
        check_supported({"architectures": [architecture]})
    message = str(error.value)
    assert message.startswith(f"model.model_name: architecture {architecture} is not supported")
    assert NOT_YET[architecture] in message and "nearest supported family is" in message


def test_unsupported_model_fails_validation_in_seconds(tmp_path) -> None:
    """Through the config layer's model read (``ModelShape.from_model_dir``), as a run would."""
    from oumi_megatron.config import ConfigError, ModelShape

    model = tmp_path / "phi3"
    model.mkdir()
    config = {"architectures": ["Phi3ForCausalLM"], "model_type": "phi3",
              "num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4,
              "vocab_size": 512}  # fmt: skip
    (model / "config.json").write_text(json.dumps(config))
    start = time.perf_counter()
    with pytest.raises(ConfigError, match="Phi3ForCausalLM is not supported .*Llama"):
        ModelShape.from_model_dir(model)
    assert time.perf_counter() - start < 2.0


def test_an_unknown_architecture_gets_the_closest_family() -> None:
    with pytest.raises(ValueError, match="nearest supported family is Qwen2"):
        check_supported({"architectures": ["Qwen2ForCausalLMX"]})
    assert check_supported({"architectures": ["Qwen3MoeForCausalLM"]}).moe


def test_gpt_oss_experts_stay_whole() -> None:
    """Megatron keeps expert biases only without expert tensor parallelism: refused up front."""
    from types import SimpleNamespace

    from oumi_megatron.config.model_shape import ModelShape
    from oumi_megatron.parallel.layout_rules import LayoutError, check_experts
    from oumi_megatron.testing.tiny_models import tiny_config

    shape = ModelShape.from_hf_config(tiny_config("gpt_oss"))
    assert shape.expert_biases and shape.num_experts == 4
    layout = dict(tensor_model_parallel_size=1, pipeline_model_parallel_size=1,
                  expert_model_parallel_size=2)  # fmt: skip
    assert check_experts(SimpleNamespace(**layout, expert_tensor_parallel_size=1), 4, shape) == 2
    with pytest.raises(LayoutError, match=r"expert_tensor_parallel_size \(2\) > 1 .*GPT-OSS"):
        check_experts(SimpleNamespace(**layout, expert_tensor_parallel_size=2), 4, shape)

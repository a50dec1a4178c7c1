"""HF export where NVIDIA ModelOpt is not installed (the GPU image): Bridge's writer asks
ModelOpt's `is_quantized`; a stand-in answers False for that call only."""

from __future__ import annotations

import importlib.util
import sys

NAMES = ("modelopt", "modelopt.torch", "modelopt.torch.quantization",
         "modelopt.torch.quantization.utils")  # fmt: skip


def test_stand_in_serves_is_quantized_then_goes(monkeypatch) -> None:
    from oumi_megatron.model import bridge

    for name in NAMES:  # restored afterwards if a real ModelOpt was imported
        monkeypatch.delitem(sys.modules, name, raising=False)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "modelopt" else real_find_spec(name, *a),
    )
    with bridge._modelopt_quantization_stand_in():
        from modelopt.torch.quantization.utils import is_quantized

        assert is_quantized(object()) is False
    assert not any(name in sys.modules for name in NAMES)


def test_real_modelopt_is_left_alone(monkeypatch) -> None:
    from oumi_megatron.model import bridge

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    before = {name: sys.modules.get(name) for name in NAMES}
    with bridge._modelopt_quantization_stand_in():
        assert {name: sys.modules.get(name) for name in NAMES} == before

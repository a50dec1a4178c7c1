"""Which models get Megatron's fused SwiGLU (on GPU only; the kernels are checked against the
plain path in tests/gpu/test_fused_swiglu.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch.nn.functional as F

from oumi_megatron.model.provider import fused_swiglu


def _provider(**fields):
    base = dict(gated_linear_unit=True, activation_func=F.silu, activation_func_clamp_value=None,
                glu_linear_offset=0.0, use_te_activation_func=False)  # fmt: skip
    return SimpleNamespace(**{**base, **fields})


def test_plain_swiglu_is_fused_on_cuda_only():
    assert fused_swiglu(_provider(), cuda=True)
    assert not fused_swiglu(_provider(), cuda=False)


@pytest.mark.parametrize(
    "fields",
    [
        {"activation_func": F.gelu},  # Gemma's gated GELU
        {"activation_func_clamp_value": 7.0, "glu_linear_offset": 1.0},  # GPT-OSS's clamped one
        {"glu_linear_offset": 1.0},
        {"gated_linear_unit": False},
    ],
)
def test_other_activations_stay_plain(fields):
    assert not fused_swiglu(_provider(**fields), cuda=True)

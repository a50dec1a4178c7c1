"""The fused SwiGLU's backward kernel (`model.swiglu_backward`) against Megatron's
`swiglu_back`: run by Triton's interpreter on the CPU here (tests/gpu/test_fused_swiglu.py runs
it compiled on a GPU), fp32 within 1e-6 relative, bf16 within one rounding step of the fp32
gradient; CPU tensors keep Megatron's function."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

_INTERPRETED = textwrap.dedent(
    """
    import torch
    from megatron.core.fusions.fused_bias_swiglu import swiglu_back
    from oumi_megatron.model.swiglu_backward import backward_with, kernel

    torch.manual_seed(0)
    for shape in [(3, 5, 1500), (7, 1024), (0, 64)]:  # widths past and at one block; no rows
        y = torch.randn(*shape[:-1], 2 * shape[-1], dtype=torch.float64) * 3
        g = torch.randn(*shape, dtype=torch.float64)
        exact = swiglu_back(g, y)
        got = backward_with(kernel(), g.float(), y.float())
        assert got.shape == y.shape and got.dtype == torch.float32
        torch.testing.assert_close(got.double(), exact, rtol=1e-6, atol=1e-6)
        half = backward_with(kernel(), g.bfloat16(), y.bfloat16())
        assert half.dtype == torch.bfloat16
        ref = swiglu_back(g.bfloat16().double(), y.bfloat16().double())  # same inputs, exact
        step = ref.abs().clamp_min(2**-126) * 2**-7  # one bf16 rounding step
        assert ((half.double() - ref).abs() <= step).all(), (half.double() - ref).abs().max()
    print("ok")
    """
)


def test_kernel_equals_megatron_under_the_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run([sys.executable, "-c", _INTERPRETED], env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]


def test_cpu_tensors_keep_megatrons_function():
    from megatron.core.fusions.fused_bias_swiglu import swiglu_back as megatron

    from oumi_megatron.model.swiglu_backward import swiglu_back

    y, g = torch.randn(4, 6, 40), torch.randn(4, 6, 20)
    assert torch.equal(swiglu_back(g, y), megatron(g, y))


def test_the_op_has_the_input_shape_under_fake_tensors():
    """What compiled layers see of the op before any kernel runs (no GPU needed)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from oumi_megatron.model.swiglu_backward import register_op

    register_op()
    with FakeTensorMode():
        y = torch.empty(4, 3, 200, dtype=torch.bfloat16, device="cuda")
        g = torch.empty(4, 3, 100, dtype=torch.bfloat16, device="cuda")
        out = torch.ops.oumi_megatron.swiglu_backward(g, y)
        assert (out.shape, out.dtype, out.device.type) == (y.shape, y.dtype, "cuda")


def test_the_choice_is_read_from_the_environment(monkeypatch):
    from oumi_megatron.model import swiglu_backward

    monkeypatch.setenv(swiglu_backward.SWIGLU_ENV, "Triton")
    assert swiglu_backward.chosen()
    monkeypatch.setenv(swiglu_backward.SWIGLU_ENV, "megatron")
    assert not swiglu_backward.chosen()
    monkeypatch.setenv(swiglu_backward.SWIGLU_ENV, "fast")
    with pytest.raises(ValueError, match="OUMI_MEGATRON_SWIGLU_BACKWARD='fast': use 'triton'"):
        swiglu_backward.chosen()

"""`model.fused_wgrad`: the weight-gradient GEMM accumulating into DDP's gradient buffer gives
the weight gradients autograd would, summed over micro-batches, also when several forwards run
before their backwards (pipeline schedules) and inside a compiled graph. (Megatron layers, DDP,
TP2, PP2×VPP2 and overlapped reduction: tests/integration/test_update_invariance.py.)"""

from __future__ import annotations

import pytest
import torch

from oumi_megatron.model.fused_wgrad import FusedWgradLinear, accumulate_wgrad_


def _reference(inputs, weight, bias):
    """Plain autograd gradients, summed over the micro-batches."""
    w = weight.detach().clone().requires_grad_()
    b = bias.detach().clone().requires_grad_()
    grads = []
    for x in inputs:
        x = x.detach().clone().requires_grad_()
        torch.nn.functional.gelu(torch.nn.functional.linear(x, w, b)).square().sum().backward()
        grads.append(x.grad)
    return w.grad, b.grad, grads


@pytest.mark.parametrize("compiled", [False, True])
def test_gradients_match_autograd_with_forwards_before_backwards(compiled):
    g = torch.Generator().manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(6, 5, generator=g))
    bias = torch.nn.Parameter(torch.randn(6, generator=g))
    weight.main_grad = torch.full((6, 5), 0.25)  # accumulated onto, not overwritten
    inputs = [torch.randn(3, 2, 5, generator=g, requires_grad=True) for _ in range(3)]

    def loss(x):
        y = FusedWgradLinear.apply(x, weight, bias, weight.main_grad)
        return torch.nn.functional.gelu(y).square().sum()

    fn = torch.compile(loss, fullgraph=True, backend="aot_eager") if compiled else loss
    losses = [fn(x) for x in inputs]  # every forward first, as a pipeline schedule may
    for value in reversed(losses):
        value.backward()

    w_grad, b_grad, x_grads = _reference(inputs, weight, bias)
    torch.testing.assert_close(weight.main_grad, w_grad + 0.25, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(bias.grad, b_grad, rtol=1e-6, atol=1e-6)
    for x, expected in zip(inputs, x_grads, strict=True):
        torch.testing.assert_close(x.grad, expected, rtol=1e-6, atol=1e-6)
    assert weight.grad.shape == weight.shape  # the placeholder DDP's hook is told to skip


def test_accumulates_low_precision_operands_into_fp32():
    g = torch.Generator().manual_seed(1)
    grad_output = torch.randn(7, 4, generator=g).bfloat16()
    total_input = torch.randn(7, 3, generator=g).bfloat16()
    main_grad = torch.ones(4, 3)
    accumulate_wgrad_(main_grad, grad_output, total_input)
    expected = 1 + grad_output.float().t() @ total_input.float()
    torch.testing.assert_close(main_grad, expected, rtol=1e-6, atol=1e-6)


def test_fake_implementation_traces_on_meta_tensors():
    main_grad = torch.empty(4, 3, device="meta")
    assert accumulate_wgrad_(main_grad, torch.empty(7, 4, device="meta"),
                             torch.empty(7, 3, device="meta")) is None  # fmt: skip

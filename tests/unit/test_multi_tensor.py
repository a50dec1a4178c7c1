"""The `_foreach` gradient norm and scaling equal Megatron's local (Python-loop) fallbacks."""

from __future__ import annotations

import pytest
import torch

from oumi_megatron.training.multi_tensor import foreach_l2_norm, foreach_scale


def _tensors(dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    shapes = [(64, 32), (32,), (7, 3, 5), (1,), (1000,)]
    return [torch.randn(s, generator=g, dtype=torch.float32).to(dtype) * 3 for s in shapes]


def test_l2_norm_equals_megatrons_fallback(monkeypatch):
    from megatron.core import utils

    monkeypatch.setattr(torch, "tensor", _on_cpu(torch.tensor))  # its result is built on CUDA
    tensors = _tensors()
    expected, _ = utils.local_multi_tensor_l2_norm(2048, None, [tensors], False)
    got, per_tensor = foreach_l2_norm(2048, None, [tensors], False)
    assert per_tensor is None and got.shape == (1,) and got.dtype == torch.float32
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    reference = torch.cat([t.flatten().double() for t in tensors]).norm().item()
    assert got.item() == pytest.approx(reference, rel=1e-6)


@pytest.mark.parametrize("scale", [1.0, 0.37])
@pytest.mark.parametrize("in_place", [False, True])
def test_scale_equals_megatrons_fallback(scale, in_place):
    from megatron.core import utils

    sources = _tensors()
    expected = (
        [torch.empty_like(t) for t in sources] if not in_place else [t.clone() for t in sources]
    )
    got = [torch.empty_like(t) for t in sources] if not in_place else [t.clone() for t in sources]
    utils.local_multi_tensor_scale(0, None, [expected if in_place else sources, expected], scale)
    foreach_scale(0, None, [got if in_place else sources, got], scale)
    assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))


def test_copy_converts_dtype_like_the_fallback():
    from megatron.core import utils

    main = _tensors()
    expected = [torch.empty_like(t, dtype=torch.bfloat16) for t in main]
    got = [torch.empty_like(t, dtype=torch.bfloat16) for t in main]
    utils.local_multi_tensor_scale(0, None, [main, expected], 1.0)
    foreach_scale(0, None, [main, got], 1.0)
    assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))


def test_installed_where_megatron_falls_back():
    from megatron.core.optimizer import clip_grads, optimizer

    from oumi_megatron.training.multi_tensor import install_foreach_multi_tensor_ops

    assert install_foreach_multi_tensor_ops()  # no Transformer Engine or Apex here
    assert clip_grads.l2_norm_impl is foreach_l2_norm
    assert clip_grads.multi_tensor_scale_impl is foreach_scale is optimizer.multi_tensor_scale_impl


def _on_cpu(factory):
    def tensor(*args, **kwargs):
        kwargs.pop("device", None)
        return factory(*args, **kwargs)

    return tensor

"""Which AdamW runs: torch's fused kernel only where every parameter lives on a GPU; Adam's
step counters restored where the optimizer keeps them (GPU test: tests/gpu/test_fused_adam.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from oumi_megatron.training.checkpoint import _step_tensor
from oumi_megatron.training.metric_reduce import _as_floats
from oumi_megatron.training.optimizer import use_fused_adam


def _megatron_like(params, cls=torch.optim.AdamW):
    return SimpleNamespace(optimizer=cls(params, lr=1e-3))


def test_host_parameters_keep_the_multi_tensor_adam() -> None:
    wrapper = _megatron_like([torch.nn.Parameter(torch.zeros(3))])
    assert use_fused_adam(wrapper) is False
    assert not wrapper.optimizer.param_groups[0]["fused"]


def test_other_optimizers_are_left_alone() -> None:
    params = [torch.nn.Parameter(torch.zeros(3))]
    assert use_fused_adam(_megatron_like(params, torch.optim.SGD)) is False
    chained = SimpleNamespace(chained_optimizers=[_megatron_like(params), SimpleNamespace()])
    assert use_fused_adam(chained) is False


def test_step_counters_stay_where_the_optimizer_keeps_them() -> None:
    on_host = _step_tensor(7.0, torch.tensor(0.0))
    assert on_host.item() == 7.0 and on_host.device.type == "cpu"
    fused_like = _step_tensor(7.0, torch.zeros((), dtype=torch.float32))
    assert fused_like.dtype == torch.float32 and fused_like.item() == 7.0
    assert _step_tensor(3.0, None).item() == 3.0


def test_metrics_are_read_from_the_device_in_one_copy() -> None:
    values = {"a": torch.tensor(1.5), "b": 2, "c": torch.tensor([0.25], dtype=torch.float64)}
    assert _as_floats(values) == {"a": 1.5, "b": 2.0, "c": 0.25}
    with pytest.raises(RuntimeError):  # one value per metric
        _as_floats({"a": torch.ones(2)})

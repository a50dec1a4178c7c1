"""RMSNorm over a width that tensor parallelism splits: OLMoE's query and key norms.

OLMoE normalises each token's queries (and keys) over all heads together, not per head
(Megatron-Bridge's ``OLMoESelfAttention``). Under tensor parallelism every rank holds some of
the heads, so the norm's scale is split with them and the mean square is summed over the
tensor-parallel group (an all-reduce that is also one in the backward pass: each rank's
output depends on every rank's inputs). At TP1 it is a plain RMSNorm.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


class SplitRMSNorm(torch.nn.Module):
    """``x / rms(x) · w`` over ``hidden_size`` features of which this rank holds
    ``hidden_size / TP`` (and that share of ``w``); fp32 statistics, as Hugging Face's OLMoE."""

    def __init__(self, config, hidden_size: int, eps: float = 1e-6):
        from megatron.core.tensor_parallel.layers import set_tensor_model_parallel_attributes

        super().__init__()
        self.config = config
        self.eps = eps
        self.tp = config.tensor_model_parallel_size
        self.full_width = hidden_size
        self.weight = torch.nn.Parameter(
            torch.ones(hidden_size // self.tp, dtype=config.params_dtype)
        )
        set_tensor_model_parallel_attributes(self.weight, is_parallel=True, dim=0, stride=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        square_sum = x32.pow(2).sum(-1, keepdim=True)
        if self.tp > 1:
            from megatron.core import parallel_state
            from torch.distributed.nn.functional import all_reduce

            group = parallel_state.get_tensor_model_parallel_group()
            square_sum = all_reduce(square_sum, op=dist.ReduceOp.SUM, group=group)
        normed = x32 * torch.rsqrt(square_sum / self.full_width + self.eps)
        return self.weight * normed.to(x.dtype)

    def sharded_state_dict(self, prefix: str = "", sharded_offsets=(), metadata=None):
        """Saved split along its features, like a column-parallel weight."""
        from megatron.core.transformer.utils import make_sharded_tensors_for_checkpoint

        state = self.state_dict(prefix="", keep_vars=True)
        return make_sharded_tensors_for_checkpoint(state, prefix, {"weight": 0}, sharded_offsets)

"""Random loss inputs shared by the aggregation and loss tests."""

from __future__ import annotations

import torch


def random_batch(seed: int, b: int = 8, t: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """fp64 token losses [b, t] and a right-padded mask with one fully masked row (row 3)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    lengths[3] = 0  # an empty (fully masked) completion must not break anything
    mask = (torch.arange(t).unsqueeze(0) < lengths.unsqueeze(1)).long()
    return torch.randn(b, t, generator=g, dtype=torch.float64), mask

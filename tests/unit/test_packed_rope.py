"""Packed-sequence RoPE in one pass equals Megatron's per-sequence loop, bit for bit."""

from __future__ import annotations

import pytest
import torch

from oumi_megatron.model.rope import _MEGATRON_THD, apply_rotary_pos_emb_thd, positions_in_sequence


class _OneRank:
    def size(self) -> int:
        return 1

    def rank(self) -> int:
        return 0


def test_positions_restart_in_every_sequence() -> None:
    cu = torch.tensor([0, 3, 4, 8])
    assert positions_in_sequence(cu, 8).tolist() == [0, 1, 2, 0, 0, 1, 2, 3]


@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize("per_token_freqs", [False, True])
def test_equals_megatrons_loop(interleaved: bool, per_token_freqs: bool) -> None:
    g = torch.Generator().manual_seed(0)
    lengths = [7, 1, 30, 12]
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    total = sum(lengths)
    t = torch.randn(total, 4, 16, generator=g)
    rows = total if per_token_freqs else max(lengths) + 5
    freqs = torch.randn(rows, 1, 1, 16, generator=g)
    kwargs = dict(rotary_interleaved=interleaved, mscale=1.0, cp_group=_OneRank())
    expected = _MEGATRON_THD(t, cu, freqs, **kwargs)
    got = apply_rotary_pos_emb_thd(t, cu, freqs, **kwargs)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("cu", [[0, 3, 4, 8], [0, 3, 3, 8], [0, 5, 5, 5], [0, 1]])
def test_compiled_positions_equal_eager(cu) -> None:
    """Compiled code finds the sequences by comparison, eager code by binary search."""
    boundaries = torch.tensor(cu)
    compiled = torch.compile(positions_in_sequence, dynamic=True, fullgraph=True)
    for total in (cu[-1], cu[-1] + 3):  # tokens past the last end: its own last sequence
        assert torch.equal(compiled(boundaries, total), positions_in_sequence(boundaries, total))

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


def test_frequencies_gathered_once_per_micro_batch_equal_the_layers_own() -> None:
    """The hooks of `per_token_frequencies` hand every layer the cos and sin of each packed
    token's own angles; a layer's RoPE then gives, bit for bit, what Megatron's per-sequence
    loop gives from the max-length table (fp32 and bf16, both rotation layouts)."""
    from types import SimpleNamespace

    from megatron.core.models.common.embeddings.rotary_pos_embedding import RotaryEmbedding
    from megatron.core.packed_seq_params import PackedSeqParams

    from oumi_megatron.model.rope import _gather_per_token, _note_packing

    rotary = RotaryEmbedding(16, 1.0, use_cpu_initialization=True, cp_group=_OneRank())
    padded_row = 20  # sequences of 5, 9 and 3 tokens; the row padding is a segment of its own
    cu = torch.tensor([0, 5, 14, 17], dtype=torch.int32)
    cu_padded = torch.tensor([0, 5, 14, 17, padded_row], dtype=torch.int32)
    packed = PackedSeqParams(qkv_format="thd", cu_seqlens_q=cu, cu_seqlens_kv=cu,
                             cu_seqlens_q_padded=cu_padded, cu_seqlens_kv_padded=cu_padded,
                             max_seqlen_q=9, max_seqlen_kv=9)  # fmt: skip
    model = SimpleNamespace(rotary_pos_emb=rotary, config=SimpleNamespace(context_parallel_size=1))
    positions = torch.zeros(1, padded_row, dtype=torch.long)
    _note_packing(model, (), {"packed_seq_params": packed, "position_ids": positions})
    table = torch.randn(9, 1, 1, 16, generator=torch.Generator().manual_seed(0))  # rotary's
    per_token = _gather_per_token(rotary, (9,), {"packed_seq": True}, table)
    assert per_token.shape == (padded_row, 1, 2, 16), "cos and sin of each token's angles"
    assert "_packed_tokens" not in vars(rotary), "used once"
    for dtype in (torch.float32, torch.bfloat16):
        t = torch.randn(padded_row, 4, 16, generator=torch.Generator().manual_seed(1)).to(dtype)
        for interleaved in (False, True):
            kwargs = dict(rotary_interleaved=interleaved, mscale=1.0, cp_group=_OneRank())
            torch.testing.assert_close(
                apply_rotary_pos_emb_thd(t, cu_padded, per_token, **kwargs),
                _MEGATRON_THD(t, cu_padded, table, **kwargs),
                rtol=0, atol=0,
            )  # fmt: skip
    for extra in ({"mscale": 1.1}, {"mla_rotary_interleaved": True}):  # YaRN's scale, MLA
        kwargs = dict(rotary_interleaved=False, cp_group=_OneRank(), **extra)
        torch.testing.assert_close(
            apply_rotary_pos_emb_thd(t, cu_padded, per_token, **kwargs),
            _MEGATRON_THD(t, cu_padded, table, **kwargs),
            rtol=0, atol=0,
        )  # fmt: skip
    # A packed forward without a noted layout (context parallelism) keeps the angles.
    assert _gather_per_token(rotary, (9,), {"packed_seq": True}, table) is table


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_padded_rows_take_cos_and_sin_once(dtype) -> None:
    """Padded rows: the hook hands the layers the cos and sin of the [seq, 1, 1, dim] angles;
    Megatron's RoPE entry point (patched `_apply_rotary_pos_emb_bshd`) gives, bit for bit, what
    it gives from the angles, for every rotation variant."""
    from types import SimpleNamespace

    from megatron.core.models.common.embeddings import rope_utils
    from megatron.core.models.common.embeddings.rotary_pos_embedding import RotaryEmbedding

    from oumi_megatron import patches
    from oumi_megatron.model.rope import _gather_per_token, install_packed_rope

    install_packed_rope()
    megatron_bshd = patches.remember("rope-cos-sin")
    rotary = RotaryEmbedding(16, 1.0, use_cpu_initialization=True, cp_group=_OneRank())
    table = torch.randn(12, 1, 1, 16, generator=torch.Generator().manual_seed(0))
    cos_sin = _gather_per_token(rotary, (12,), {"packed_seq": False}, table)
    assert cos_sin.shape == (12, 1, 2, 16)
    t = torch.randn(12, 3, 4, 16, generator=torch.Generator().manual_seed(1)).to(dtype)
    for rotary_interleaved, mla, mscale in ((False, False, 1.0), (True, False, 1.0),
                                            (False, True, 1.0), (False, False, 0.7)):  # fmt: skip
        config = SimpleNamespace(apply_rope_fusion=False, rotary_interleaved=rotary_interleaved,
                                 multi_latent_attention=mla)  # fmt: skip
        got = rope_utils.apply_rotary_pos_emb(
            t, cos_sin, config, mscale=mscale, cp_group=_OneRank(), mla_rotary_interleaved=mla
        )
        expected = megatron_bshd(t, table, rotary_interleaved=rotary_interleaved,
                                 mla_rotary_interleaved=mla, mscale=mscale)  # fmt: skip
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    # The angles themselves still go through Megatron's own code.
    torch.testing.assert_close(rope_utils._apply_rotary_pos_emb_bshd(t, table),
                               megatron_bshd(t, table), rtol=0, atol=0)  # fmt: skip

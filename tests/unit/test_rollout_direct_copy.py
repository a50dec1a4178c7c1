"""Direct copies: an engine's recorded copies composed with an export's element map write the
same bits as exporting and loading; anything else is refused or caught by the check."""

from __future__ import annotations

import torch
from test_rollout_copy_plan import FF, KV, FusedModel, H, V

from oumi_megatron.model.export_index import ParameterIndex
from oumi_megatron.rollout.copy_plan import CopyPlan
from oumi_megatron.step.direct_copy import DirectCopy, strided_layout

GROUPS, HEAD = 2, 2  # 2 query groups of 2 query heads (H = 8), K/V head dim 2 (KV = 4)


def megatron_params(seed: int) -> dict[str, torch.Tensor]:
    """Parameters laid out as Megatron lays them out (interleaved QKV, fused gate/up)."""
    g = torch.Generator().manual_seed(seed)
    shapes = {"embedding": (V, H), "linear_qkv": (H + 2 * KV, H), "linear_fc1": (2 * FF, H),
              "linear_fc2": (H, FF), "final_norm": (H,)}  # fmt: skip
    return {name: torch.randn(shape, generator=g) for name, shape in shapes.items()}


def export(params: dict[str, torch.Tensor], double_norm: bool = False):
    """A Bridge-like export: QKV de-interleaved per query group, gate/up halves, tied head."""
    qkv = params["linear_qkv"].reshape(GROUPS, -1, HEAD, H)  # [groups, 2 q + k + v, head, H]
    per_group = H // HEAD // GROUPS
    q = qkv[:, :per_group].reshape(-1, H)
    k = qkv[:, per_group].reshape(-1, H)
    v = qkv[:, per_group + 1].reshape(-1, H)
    gate, up = params["linear_fc1"].chunk(2)
    norm = params["final_norm"] * 2 if double_norm else params["final_norm"]
    yield from [("model.embed_tokens.weight", params["embedding"]), ("attn.q_proj.weight", q),
                ("attn.k_proj.weight", k), ("attn.v_proj.weight", v),
                ("mlp.gate_proj.weight", gate), ("mlp.up_proj.weight", up),
                ("mlp.down_proj.weight", params["linear_fc2"]), ("model.norm.weight", norm),
                ("lm_head.weight", params["embedding"])]  # fmt: skip


def numbered(params: dict[str, torch.Tensor]) -> tuple[ParameterIndex, dict[str, torch.Tensor]]:
    index = ParameterIndex()
    numbers = {}
    for name, param in params.items():
        start = index.add(param)
        numbers[name] = torch.arange(start, start + param.numel()).view(param.shape)
    return index, numbers


def loaded_engine(params, **kwargs) -> tuple[FusedModel, CopyPlan]:
    model, plan = FusedModel(), CopyPlan()
    plan.load(model.load_weights, list(export(params, **kwargs)))
    plan.finish(model)
    assert plan.ready
    return model, plan


def test_direct_copies_equal_export_then_load():
    params = megatron_params(0)
    model, plan = loaded_engine(params)
    index, numbers = numbered(params)
    direct = DirectCopy.build(plan.entries, index, export(numbers))
    assert direct is not None and direct.matches_engine()
    assert direct.num_bytes == sum(p.numel() * 4 for p in model.parameters())
    with torch.no_grad():  # the update: new values in the same parameter storage
        for param in params.values():
            param.copy_(torch.randn_like(param))
    assert not direct.matches_engine()
    direct.copy()
    reference = FusedModel()
    reference.load_weights(export(params))
    for (name, got), (_, want) in zip(
        model.named_parameters(), reference.named_parameters(), strict=True
    ):
        assert torch.equal(got, want), name
    assert direct.usable(plan.entries)
    params["linear_fc2"].data = params["linear_fc2"].data.clone()  # storage moved
    assert not direct.usable(plan.entries)
    assert not direct.usable(dict(plan.entries))  # another recording


def test_a_computed_export_value_is_caught_by_the_check():
    params = megatron_params(1)
    _, plan = loaded_engine(params, double_norm=True)
    index, numbers = numbered(params)
    direct = DirectCopy.build(plan.entries, index, export(numbers, double_norm=True))
    # Doubled element numbers still look strided (stride 2), so only the check can tell.
    assert direct is None or not direct.matches_engine()


def test_a_missing_name_is_refused():
    params = megatron_params(2)
    _, plan = loaded_engine(params)
    index, numbers = numbered(params)
    partial = [(n, t) for n, t in export(numbers) if n != "mlp.up_proj.weight"]
    assert DirectCopy.build(plan.entries, index, partial) is None


def test_strided_layout_finds_views_and_refuses_the_rest():
    base = torch.arange(100, 100 + 24)
    assert strided_layout(base.view(4, 6)) == (100, [24], [1])
    assert strided_layout(base.view(4, 6).t()) == (100, [6, 4], [1, 6])
    assert strided_layout(base.view(2, 3, 4)[:, :2]) == (100, [2, 8], [12, 1])
    assert strided_layout(torch.tensor([7])) == (7, [1], [1])
    assert strided_layout(torch.tensor([3, 3, 3])) == (3, [3], [0])
    assert strided_layout(torch.tensor([0, 2, 1, 3, 5])) is None
    assert strided_layout(torch.tensor([5, 4, 3])) is None  # negative stride
    assert strided_layout(torch.tensor([0, 1, 2, 10, 11, 13])) is None

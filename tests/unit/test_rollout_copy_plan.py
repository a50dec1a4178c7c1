"""CopyPlan: a vLLM-style `load_weights` (fused q/k/v and gate/up, tied embeddings) recorded
once, then replayed as plain copies, lands the same bits; anything it cannot explain keeps
`load_weights`."""

from __future__ import annotations

import torch

from oumi_megatron.rollout.copy_plan import CopyPlan

H, KV, FF, V = 8, 4, 12, 16


class FusedModel(torch.nn.Module):
    """Parameters laid out as vLLM lays them out; `load_weights` takes Hugging Face names."""

    def __init__(self, scale_norm: bool = False) -> None:
        super().__init__()
        self.embed = torch.nn.Parameter(torch.zeros(V, H))
        self.qkv = torch.nn.Parameter(torch.zeros(H + 2 * KV, H))
        self.gate_up = torch.nn.Parameter(torch.zeros(2 * FF, H))
        self.down = torch.nn.Parameter(torch.zeros(H, FF))
        self.norm = torch.nn.Parameter(torch.zeros(H))
        self.scale_norm = scale_norm

    def load_weights(self, weights) -> None:
        shards = {"q_proj": (self.qkv, 0, H), "k_proj": (self.qkv, H, KV),
                  "v_proj": (self.qkv, H + KV, KV), "gate_proj": (self.gate_up, 0, FF),
                  "up_proj": (self.gate_up, FF, FF)}  # fmt: skip
        with torch.no_grad():
            for name, tensor in weights:
                short = name.split(".")[-2] if name.endswith(".weight") else name
                if name == "lm_head.weight":
                    continue  # tied to the embedding
                if short in shards:
                    param, start, size = shards[short]
                    param.data.narrow(0, start, size).copy_(tensor)
                elif name == "model.norm.weight":
                    self.norm.data.copy_(tensor * 2 if self.scale_norm else tensor)
                else:
                    target = {
                        "model.embed_tokens.weight": self.embed,
                        "mlp.down_proj.weight": self.down,
                    }
                    target[name].data.copy_(tensor)


def hf_weights(seed: int) -> list[tuple[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    shapes = {"model.embed_tokens.weight": (V, H), "attn.q_proj.weight": (H, H),
              "attn.k_proj.weight": (KV, H), "attn.v_proj.weight": (KV, H),
              "mlp.gate_proj.weight": (FF, H), "mlp.up_proj.weight": (FF, H),
              "mlp.down_proj.weight": (H, FF), "model.norm.weight": (H,),
              "lm_head.weight": (V, H)}  # fmt: skip
    return [(name, torch.randn(shape, generator=g)) for name, shape in shapes.items()]


def _sync(plan: CopyPlan, model: FusedModel, weights, bucket: int = 4) -> None:
    for start in range(0, len(weights), bucket):
        plan.load(model.load_weights, weights[start : start + bucket])
    plan.finish(model)


def test_replayed_copies_equal_load_weights():
    model, reference, plan = FusedModel(), FusedModel(), CopyPlan()
    _sync(plan, model, hf_weights(0))
    assert plan.ready
    calls = []
    model.load_weights = lambda weights: calls.append(weights)  # replay must not call it
    # Views into one flat buffer, as a broadcast receiver hands them over.
    second = hf_weights(1)
    flat = torch.cat([t.reshape(-1) for _, t in second])
    views, offset = [], 0
    for name, tensor in second:
        views.append((name, flat[offset : offset + tensor.numel()].view(tensor.shape)))
        offset += tensor.numel()
    _sync(plan, model, views)
    assert calls == []
    reference.load_weights(second)
    for (name, got), (_, want) in zip(
        model.named_parameters(), reference.named_parameters(), strict=True
    ):
        assert torch.equal(got, want), name


def test_a_computed_value_keeps_load_weights():
    model, plan = FusedModel(scale_norm=True), CopyPlan()
    _sync(plan, model, hf_weights(0))
    assert not plan.ready and not plan.usable


def test_an_uncovered_parameter_keeps_load_weights():
    model, plan = FusedModel(), CopyPlan()
    weights = [(n, t) for n, t in hf_weights(0) if n != "mlp.down_proj.weight"]
    _sync(plan, model, weights)
    assert not plan.ready

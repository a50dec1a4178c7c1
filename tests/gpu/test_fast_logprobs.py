"""The compiled (fused) log-prob / entropy / gradient kernels on GPU equal the eager ones, on a
Qwen2.5-sized vocabulary in bf16, and the eager GPU path equals the fp32 reference."""

from __future__ import annotations

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: run on the device"),
]
VOCAB, TOKENS = 151_936, 3000


def _run(compiled: bool, monkeypatch, overwrite: bool = False):
    from oumi_megatron.algorithms import logprobs as lp

    monkeypatch.setenv(lp.COMPILE_ENV, "1" if compiled else "0")
    lp._COMPILED.clear()
    g = torch.Generator(device="cuda").manual_seed(0)
    leaf = (torch.randn(TOKENS, VOCAB, device="cuda", generator=g) * 3).bfloat16()
    leaf.requires_grad_()
    kept = leaf.detach().clone()
    logits = leaf * 1  # a model's output, not the caller's tensor: it may be overwritten
    target = torch.randint(0, VOCAB, (TOKENS,), device="cuda", generator=g)
    values, entropy = lp.vocab_parallel_logprobs(
        logits, target, temperature=0.9, with_entropy=True, overwrite_logits=overwrite
    )
    weights = torch.randn(TOKENS, device="cuda", generator=g)
    (values * weights).sum().backward()
    return values.detach(), entropy, leaf.grad.float(), kept, target, weights


def test_compiled_equals_eager(monkeypatch):
    eager = _run(False, monkeypatch)
    fused = _run(True, monkeypatch)
    from oumi_megatron.algorithms import logprobs as lp

    assert all(f is not fn for fn, f in lp._COMPILED.items()), "compilation fell back to eager"
    assert (fused[0] - eager[0]).abs().mean() <= 2e-3
    assert (fused[1] - eager[1]).abs().mean() <= 2e-3
    scale = eager[2].abs().max()
    assert (fused[2] - eager[2]).abs().max() <= 1e-2 * scale


@pytest.mark.parametrize("compiled", [False, True])
def test_gradient_written_over_the_logits_equals_the_separate_one(monkeypatch, compiled):
    separate = _run(compiled, monkeypatch)
    over = _run(compiled, monkeypatch, overwrite=True)
    assert torch.equal(over[0], separate[0])
    assert torch.equal(over[2], separate[2])


def test_eager_gpu_equals_fp32_reference(monkeypatch):
    values, entropy, grad, logits, target, weights = _run(False, monkeypatch)
    ref_logits = logits.float().requires_grad_()
    log_softmax = torch.log_softmax(ref_logits / 0.9, dim=-1)
    reference = log_softmax.gather(-1, target[:, None])[:, 0]
    (reference * weights).sum().backward()
    assert (values - reference.detach()).abs().max() <= 1e-4
    ref_entropy = -(log_softmax.exp() * log_softmax).sum(-1).detach()
    assert (entropy - ref_entropy).abs().max() <= 1e-3
    assert (grad - ref_logits.grad).abs().max() <= 1e-2 * ref_logits.grad.abs().max()

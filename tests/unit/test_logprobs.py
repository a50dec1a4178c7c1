"""Chunked (vocab-parallel) log-probs and entropy equal plain log_softmax, values and gradients."""

from __future__ import annotations

import pytest
import torch

from oumi_megatron.algorithms.logprobs import vocab_parallel_entropy, vocab_parallel_logprobs


@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("chunk_tokens", [1, 3, 1024])
def test_logprobs_and_grad_match_log_softmax(temperature, chunk_tokens):
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 11, (2, 5))
    weights = torch.randn(2, 5, dtype=torch.float64)

    ours = vocab_parallel_logprobs(
        logits, target, temperature=temperature, chunk_tokens=chunk_tokens
    )
    (ours * weights).sum().backward()
    grad_ours = logits.grad.clone()
    logits.grad = None

    reference = torch.log_softmax(logits / temperature, -1).gather(-1, target.unsqueeze(-1))[..., 0]
    (reference * weights).sum().backward()
    torch.testing.assert_close(ours.double(), reference, atol=1e-6, rtol=0)
    torch.testing.assert_close(grad_ours, logits.grad, atol=1e-6, rtol=0)


def test_entropy_matches_definition():
    torch.manual_seed(1)
    logits = torch.randn(4, 7)
    probs = torch.softmax(logits / 0.5, -1)
    expected = -(probs * torch.log(probs)).sum(-1)
    torch.testing.assert_close(
        vocab_parallel_entropy(logits, temperature=0.5, chunk_tokens=3), expected
    )


def test_uniform_logits_give_log_vocab():
    logits = torch.zeros(3, 16)
    target = torch.tensor([0, 5, 15])
    torch.testing.assert_close(
        vocab_parallel_logprobs(logits, target), torch.full((3,), -torch.log(torch.tensor(16.0)))
    )

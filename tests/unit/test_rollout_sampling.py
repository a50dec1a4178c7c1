"""Logit processing (vLLM's processed logprobs), sampling params and seeds."""

from __future__ import annotations

import math

import pytest
import torch

from oumi_megatron.rollout import SamplingParams, derive_seed
from oumi_megatron.rollout.sampling import (
    apply_top_k_top_p,
    processed_logits,
    processed_logprobs,
    sample_next,
)


def test_sampling_params_validation_and_normalisation():
    assert SamplingParams(stop_token_ids=[2, 5]).stop_token_ids == (2, 5)
    assert SamplingParams(temperature=0.0).greedy
    assert not SamplingParams(temperature=0.5).greedy
    for bad in ({"n": 0}, {"temperature": -1.0}, {"top_p": 0.0}, {"max_new_tokens": 0}):
        with pytest.raises(ValueError):
            SamplingParams(**bad)


def test_derive_seed_is_stable_and_separates_streams():
    assert derive_seed(7, 1, 2) == derive_seed(7, 1, 2)
    seeds = {derive_seed(s, i, j) for s in range(3) for i in range(3) for j in range(3)}
    assert len(seeds) == 27
    assert all(0 <= s < 2**63 for s in seeds)


def test_top_k_keeps_ties_with_kth_largest():
    logits = torch.tensor([[1.0, 3.0, 2.0, 2.0, 0.5]])
    out = apply_top_k_top_p(logits, top_k=2, top_p=1.0)
    # The 2nd largest is 2.0, held by two tokens: both kept (vLLM's rule).
    assert torch.isinf(out[0, [0, 4]]).all()
    assert torch.equal(out[0, [1, 2, 3]], logits[0, [1, 2, 3]])


def test_top_p_drops_low_tail_and_renormalises():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = probs.log()[None]
    logprobs = processed_logprobs(logits, SamplingParams(top_p=0.8))
    # Ascending cumulative [0.05, 0.2, 0.5, 1.0]: <= 0.2 dropped -> keep {0.5, 0.3}.
    assert torch.isinf(logprobs[0, 2:]).all()
    expected = torch.tensor([0.5, 0.3]) / 0.8
    torch.testing.assert_close(logprobs[0, :2].exp(), expected)


def test_tiny_top_p_keeps_the_argmax():
    logits = torch.tensor([[0.1, 2.0, -1.0]])
    out = apply_top_k_top_p(logits, top_k=-1, top_p=1e-6)
    assert torch.isfinite(out).tolist() == [[False, True, False]]


def test_temperature_is_applied_before_masking():
    logits = torch.randn(3, 11)
    params = SamplingParams(temperature=0.5, top_k=4)
    expected = apply_top_k_top_p(logits / 0.5, 4, 1.0)
    torch.testing.assert_close(processed_logits(logits, params), expected)
    lp = processed_logprobs(logits, params)
    torch.testing.assert_close(lp.exp().sum(-1), torch.ones(3))
    assert (torch.isfinite(lp).sum(-1) == 4).all()


def test_greedy_uses_raw_logits():
    logits = torch.randn(2, 7)
    params = SamplingParams(temperature=0.0, top_k=2, top_p=0.5)
    torch.testing.assert_close(processed_logprobs(logits, params), logits.log_softmax(-1))
    token = sample_next(processed_logprobs(logits, params), params, [])
    assert torch.equal(token, logits.argmax(-1))


def test_sampling_follows_the_processed_distribution():
    logits = torch.tensor([0.5, 0.3, 0.15, 0.05]).log()[None].repeat(2000, 1)
    params = SamplingParams(top_p=0.8, seed=0)
    gens = [torch.Generator().manual_seed(i) for i in range(2000)]
    tokens = sample_next(processed_logprobs(logits, params), params, gens)
    assert set(tokens.tolist()) <= {0, 1}
    frac = (tokens == 0).float().mean().item()
    assert math.isclose(frac, 0.625, abs_tol=0.05)

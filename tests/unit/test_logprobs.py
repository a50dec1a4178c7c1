"""Chunked (vocab-parallel) log-probs and entropy equal plain log_softmax, values and gradients;
with top-k/top-p, the rollout engine's processed log-probs (TP2: tests/integration)."""

from __future__ import annotations

import pytest
import torch

from oumi_megatron.algorithms.logprobs import vocab_parallel_entropy, vocab_parallel_logprobs
from oumi_megatron.algorithms.truncation import apply_top_k_top_p
from oumi_megatron.rollout import SamplingParams
from oumi_megatron.rollout.sampling import processed_logprobs, sample_next


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


# ---- top-k / top-p: the truncated distribution the rollout engine samples from ------------


def _masked_log_softmax(logits, temperature, top_k, top_p):
    """Reference: autograd through log_softmax over the kept logits (others -inf)."""
    scaled = logits / temperature
    kept = torch.isfinite(apply_top_k_top_p(scaled.detach().float(), top_k, top_p))
    return torch.log_softmax(scaled.masked_fill(~kept, float("-inf")), -1)


def test_top_k_1_gives_the_argmax_logprob_0():
    logits = torch.tensor([[0.3, 2.0, -1.0, 1.9], [5.0, 0.0, 0.0, 4.0]], requires_grad=True)
    argmax = torch.tensor([1, 0])
    ours = vocab_parallel_logprobs(logits, argmax, temperature=0.7, top_k=1)
    assert ours.tolist() == [0.0, 0.0]
    ours.sum().backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))  # log p = 0 whatever the logits
    other = vocab_parallel_logprobs(logits.detach(), torch.tensor([3, 3]), top_k=1)
    assert other.tolist() == [float("-inf")] * 2


def test_top_p_keeping_two_tokens_is_a_two_way_softmax():
    # T = 0.5 turns these logits into log [0.5, 0.3, 0.15, 0.05]. Ascending cumulative
    # probabilities 0.05, 0.2, 0.5, 1: top_p 0.75 drops those <= 0.25, keeping 0.5 and 0.3.
    logits = (0.5 * torch.tensor([0.5, 0.3, 0.15, 0.05]).log()).repeat(4, 1)
    target = torch.tensor([0, 1, 2, 3])
    ours = vocab_parallel_logprobs(logits, target, temperature=0.5, top_p=0.75)
    expected = torch.tensor([0.5 / 0.8, 0.3 / 0.8]).log()
    torch.testing.assert_close(ours[:2], expected)
    assert torch.isinf(ours[2:]).all()
    entropy = vocab_parallel_entropy(logits, temperature=0.5, top_p=0.75)
    torch.testing.assert_close(entropy, -(expected.exp() * expected).sum().repeat(4))


def test_top_k_keeps_ties_with_the_kth_logit():
    logits = torch.tensor([[1.0, 3.0, 2.0, 2.0, 0.5]])
    ours = vocab_parallel_logprobs(logits, torch.tensor([1]), top_k=2)
    # The 2nd largest logit (2.0) is held twice: three tokens are kept.
    expected = 3.0 - torch.tensor([3.0, 2.0, 2.0]).exp().sum().log()
    torch.testing.assert_close(ours, expected.reshape(1))


def test_equals_the_rollout_engines_processed_logprobs():
    torch.manual_seed(2)
    logits = torch.randn(64, 300) * 3
    params = SamplingParams(temperature=0.7, top_k=20, top_p=0.9)
    processed = processed_logprobs(logits, params)
    generators = [torch.Generator().manual_seed(i) for i in range(64)]
    target = sample_next(processed, params, generators)
    ours = vocab_parallel_logprobs(
        logits, target, temperature=0.7, chunk_tokens=10, top_k=20, top_p=0.9
    )
    rollout = processed.gather(-1, target[:, None])[:, 0]
    assert (ours - rollout).abs().max().item() <= 1e-6
    entropy = vocab_parallel_entropy(logits, temperature=0.7, chunk_tokens=10, top_k=20, top_p=0.9)
    plogp = torch.where(torch.isfinite(processed), processed.exp() * processed, 0.0)
    torch.testing.assert_close(entropy, -plogp.sum(-1))


@pytest.mark.parametrize(
    ("top_k", "top_p", "temperature"), [(5, 1.0, 1.0), (None, 0.8, 0.7), (7, 0.9, 0.7)]
)
@pytest.mark.parametrize("chunk_tokens", [1, 4, 1024])
def test_truncated_logprobs_and_grad_match_masked_log_softmax(top_k, top_p, temperature,
                                                              chunk_tokens):  # fmt: skip
    torch.manual_seed(3)
    logits = torch.randn(3, 5, 40, dtype=torch.float64, requires_grad=True)
    reference = _masked_log_softmax(logits, temperature, top_k, top_p)
    target = torch.distributions.Categorical(logits=reference.detach()).sample()
    weights = torch.randn(3, 5, dtype=torch.float64)

    ours = vocab_parallel_logprobs(logits, target, temperature=temperature,
                                   chunk_tokens=chunk_tokens, top_k=top_k, top_p=top_p)  # fmt: skip
    (ours * weights).sum().backward()
    grad_ours = logits.grad.clone()
    logits.grad = None
    picked = reference.gather(-1, target.unsqueeze(-1))[..., 0]
    (picked * weights).sum().backward()
    torch.testing.assert_close(ours.double(), picked, atol=1e-6, rtol=0)
    torch.testing.assert_close(grad_ours, logits.grad, atol=1e-6, rtol=0)
    dropped = torch.isinf(reference)
    assert dropped.any() and (grad_ours[dropped] == 0).all()  # no gradient to masked logits


def test_target_outside_the_kept_set_is_minus_inf_without_gradient():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]], requires_grad=True)
    ours = vocab_parallel_logprobs(logits, torch.tensor([3]), top_k=2)
    assert ours.item() == float("-inf")
    ours.sum().backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_settings_that_truncate_nothing_take_the_full_vocabulary_path():
    torch.manual_seed(4)
    logits = torch.randn(6, 9)
    target = torch.randint(0, 9, (6,))
    full = vocab_parallel_logprobs(logits, target, temperature=0.7)
    # top_k >= vocabulary is off in vLLM too.
    assert torch.equal(vocab_parallel_logprobs(logits, target, temperature=0.7, top_k=9), full)
    assert torch.equal(vocab_parallel_entropy(logits, top_k=50), vocab_parallel_entropy(logits))


@pytest.mark.parametrize(("top_k", "top_p"), [(None, 1.0), (5, 0.9)])
def test_entropy_from_the_logprob_pass_is_the_entropy(top_k, top_p):
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(7, 4, 33, generator=g, dtype=torch.float64).float().requires_grad_()
    target = torch.randint(0, 33, (7, 4), generator=g)
    logprobs, entropy = vocab_parallel_logprobs(
        logits, target, temperature=0.7, chunk_tokens=5, top_k=top_k, top_p=top_p,
        with_entropy=True,
    )  # fmt: skip
    alone = vocab_parallel_logprobs(
        logits, target, temperature=0.7, chunk_tokens=5, top_k=top_k, top_p=top_p
    )
    torch.testing.assert_close(logprobs, alone, rtol=0, atol=0)
    expected = vocab_parallel_entropy(
        logits.detach(), temperature=0.7, chunk_tokens=5, top_k=top_k, top_p=top_p
    )
    torch.testing.assert_close(entropy, expected, rtol=1e-6, atol=1e-6)
    assert not entropy.requires_grad
    if top_k is None:  # by definition, from log_softmax
        reference = torch.log_softmax(logits.detach() / 0.7, dim=-1)
        torch.testing.assert_close(entropy, -(reference.exp() * reference).sum(-1))


@pytest.mark.parametrize(("top_k", "top_p"), [(None, 1.0), (5, 0.9)])
def test_sequence_first_logits_are_read_in_place_with_the_same_values_and_grads(top_k, top_p):
    """[B, S, V] logits that are a transposed view of [S, B, V] memory (what the policy's
    output processor returns) give what contiguous batch-first logits give, values and
    gradients, and the gradient keeps the sequence-first memory (no copy of the block)."""
    g = torch.Generator().manual_seed(4)
    memory = torch.randn(6, 3, 29, generator=g, dtype=torch.float64).requires_grad_()
    target = torch.randint(0, 29, (3, 6), generator=g)
    weights = torch.randn(3, 6, generator=g, dtype=torch.float64)
    view = memory.transpose(0, 1)
    assert not view.is_contiguous()
    kwargs = {"temperature": 0.7, "chunk_tokens": 4, "top_k": top_k, "top_p": top_p}

    logprobs, entropy = vocab_parallel_logprobs(view, target, with_entropy=True, **kwargs)
    (logprobs * weights).sum().backward()
    assert memory.grad.is_contiguous(), "the gradient arrives in the logits' own layout"

    batch_first = memory.detach().transpose(0, 1).contiguous().requires_grad_()
    expected, expected_entropy = vocab_parallel_logprobs(
        batch_first, target, with_entropy=True, **kwargs
    )
    (expected * weights).sum().backward()
    assert logprobs.shape == entropy.shape == target.shape
    torch.testing.assert_close(logprobs, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(entropy, expected_entropy, rtol=0, atol=1e-12)
    torch.testing.assert_close(memory.grad.transpose(0, 1), batch_first.grad, rtol=0, atol=1e-12)
    alone = vocab_parallel_entropy(view.detach(), temperature=0.7, chunk_tokens=4, top_k=top_k,
                                   top_p=top_p)  # fmt: skip
    torch.testing.assert_close(alone, expected_entropy, rtol=0, atol=1e-12)


@pytest.mark.parametrize("sequence_first", [False, True])
def test_gradient_written_over_the_logits_equals_the_plain_one(sequence_first):
    """``overwrite_logits``: the same log-probs and gradient, and the gradient is the logits'
    own memory (no second tokens × vocabulary block)."""
    g = torch.Generator().manual_seed(5)
    hidden = torch.randn(6, 3, 8, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(29, 8, generator=g, dtype=torch.float64)
    target = torch.randint(0, 29, (3, 6), generator=g)
    weights = torch.randn(3, 6, generator=g, dtype=torch.float64)
    seen = {}

    def run(overwrite: bool):
        memory = hidden @ weight.T  # [S, B, V], as the output layer makes it
        logits = memory.transpose(0, 1) if sequence_first else memory.transpose(0, 1).contiguous()
        logits.register_hook(lambda grad: seen.update(grad=grad, logits=logits))
        out = vocab_parallel_logprobs(
            logits, target, temperature=0.7, chunk_tokens=4, overwrite_logits=overwrite
        )
        (out * weights).sum().backward()
        grad = hidden.grad.clone()
        hidden.grad = None
        return out.detach(), grad

    plain, plain_grad = run(False)
    assert seen["grad"].untyped_storage().data_ptr() != seen["logits"].untyped_storage().data_ptr()
    ours, ours_grad = run(True)
    assert seen["grad"].untyped_storage().data_ptr() == seen["logits"].untyped_storage().data_ptr()
    torch.testing.assert_close(ours, plain, rtol=0, atol=0)
    torch.testing.assert_close(ours_grad, plain_grad, rtol=0, atol=1e-12)


def test_overwriting_logits_that_another_pass_saved_fails_loudly():
    """A second autograd use of the same logits (here the truncated top-k path) would read the
    overwritten values: torch's in-place check stops the backward instead."""
    logits = (torch.randn(4, 13, dtype=torch.float64, requires_grad=True) * 1.0).clone()
    target = torch.randint(0, 13, (4,))
    kept = vocab_parallel_logprobs(logits, target, chunk_tokens=2, top_k=5)
    # Created last, so its backward runs first and overwrites what the other one saved.
    full = vocab_parallel_logprobs(logits, target, chunk_tokens=2, overwrite_logits=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        (full.sum() + torch.where(torch.isinf(kept), 0.0, kept).sum()).backward()

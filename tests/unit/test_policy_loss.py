"""Clipped surrogate, TIS, loss aggregation and the combined grpo_loss."""

import math

import pytest
import torch

from oumi_megatron.algorithms import (
    AGGREGATION_MODES,
    AggregationMode,
    GrpoLossConfig,
    LossNormalizer,
    aggregate_loss,
    batch_counts,
    clipped_surrogate,
    combine_metrics,
    grpo_loss,
    metric_reduce_op,
    token_mult_prob_error,
    truncated_is_weight,
)

LN = math.log

# ---------------------------------------------------------------- clipped surrogate


def test_surrogate_hand_values_both_sides_both_signs() -> None:
    # One token per sequence; advantages per sequence [B] broadcast over T=1; old_logp = 0.
    ratio = torch.tensor([[1.5], [0.5], [0.5], [1.5], [1.1], [2.0]])
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0, 2.0, 0.0])
    logp = ratio.log().requires_grad_(True)
    out = clipped_surrogate(logp, torch.zeros_like(logp), adv, epsilon=0.2)
    # -min(r A, clip(r, 0.8, 1.2) A):
    #   r=1.5 A=+1: -min(1.5, 1.2) = -1.2  clipped high
    #   r=0.5 A=+1: -min(0.5, 0.8) = -0.5
    #   r=0.5 A=-1: -min(-0.5, -0.8) = 0.8  clipped low
    #   r=1.5 A=-1: -min(-1.5, -1.2) = 1.5
    #   r=1.1 A=+2: -min(2.2, 2.2) = -2.2
    #   r=2.0 A= 0: 0, not clipped
    torch.testing.assert_close(
        out.loss, torch.tensor([[-1.2], [-0.5], [0.8], [1.5], [-2.2], [0.0]])
    )
    assert out.clipped_high.squeeze(1).tolist() == [True, False, False, False, False, False]
    assert out.clipped_low.squeeze(1).tolist() == [False, False, True, False, False, False]
    assert out.clipped.squeeze(1).tolist() == [True, False, True, False, False, False]
    out.loss.sum().backward()
    # d/dlogp of -r A is -A r on the unclipped branch, 0 where the clipped branch is active.
    torch.testing.assert_close(
        logp.grad, torch.tensor([[0.0], [-0.5], [0.0], [1.5], [-2.2], [0.0]])
    )


def test_surrogate_clip_higher() -> None:
    ratio = torch.tensor([[1.25, 1.5, 0.75]])
    adv = torch.tensor([[1.0, 1.0, -1.0]])
    out = clipped_surrogate(ratio.log(), torch.zeros(1, 3), adv, epsilon=0.2, epsilon_high=0.28)
    # 1.25 < 1.28 unclipped: -1.25; 1.5 -> -1.28 clipped; low side still 0.8: -min(-0.75, -0.8).
    torch.testing.assert_close(out.loss, torch.tensor([[-1.25, -1.28, 0.8]]))
    assert out.clipped_high.tolist() == [[False, True, False]]
    assert out.clipped_low.tolist() == [[False, False, True]]
    # Same tokens with symmetric eps=0.2 clip the first one too.
    sym = clipped_surrogate(ratio.log(), torch.zeros(1, 3), adv, epsilon=0.2)
    torch.testing.assert_close(sym.loss, torch.tensor([[-1.2, -1.2, 0.8]]))


def test_surrogate_exact_boundary_is_not_clipped() -> None:
    # Ratios exactly 1 - eps_low = 0.5 and 1 + eps_high = 2.0 (exact in fp32): both branches
    # coincide, so the token is not reported as clipped and keeps its gradient -A r.
    ratio = torch.tensor([[0.5, 2.0]])
    logp = ratio.log().requires_grad_(True)
    assert torch.equal(logp.detach().exp(), ratio)
    adv = torch.tensor([[-1.0, 1.0]])
    out = clipped_surrogate(logp, torch.zeros(1, 2), adv, epsilon=0.5, epsilon_high=1.0)
    torch.testing.assert_close(out.loss, torch.tensor([[0.5, -2.0]]))
    assert not out.clipped.any()
    out.loss.sum().backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[0.5, -2.0]]))


def test_surrogate_gradient_at_ratio_one_is_minus_advantage() -> None:
    g = torch.Generator().manual_seed(0)
    logp = (-torch.rand(3, 4, generator=g) * 3).requires_grad_(True)
    adv = torch.tensor([0.7, -1.3, 0.0])
    clipped_surrogate(logp, logp.detach(), adv).loss.sum().backward()
    torch.testing.assert_close(logp.grad, (-adv).unsqueeze(1).expand(3, 4))


# ---------------------------------------------------------------- TIS / mismatch


def test_truncated_is_weight_values_and_detached() -> None:
    old = torch.zeros(3, requires_grad=True)
    rollout = torch.tensor([-LN(3.0), LN(2.0), 0.0], requires_grad=True)
    w = truncated_is_weight(old, rollout, cap=2.0)
    # exp(0 - rollout) = [3, 0.5, 1] -> capped at 2.
    torch.testing.assert_close(w, torch.tensor([2.0, 0.5, 1.0]))
    assert not w.requires_grad
    with pytest.raises(ValueError):
        truncated_is_weight(old, rollout, cap=0.0)


def test_token_mult_prob_error_masked_mean() -> None:
    trainer = torch.tensor([[0.0, 0.0, 0.0], [0.0, 5.0, float("nan")]])
    rollout = torch.tensor([[-LN(3.0), LN(2.0), 0.0], [LN(4.0), 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    # exp(|d|) over masked tokens: (3 + 2 + 1 + 4) / 4 = 2.5; NaN / unmasked ignored.
    torch.testing.assert_close(token_mult_prob_error(trainer, rollout, mask), torch.tensor(2.5))


# ---------------------------------------------------------------- aggregation

MASK = torch.tensor([[1, 1, 1], [1, 0, 0]])
LOSS = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])


@pytest.mark.parametrize(
    ("mode", "max_len", "expected"),
    [
        ("token-mean", None, 2.5),  # (1 + 2 + 3 + 4) / 4
        ("seq-mean-token-mean", None, 3.0),  # (6 / 3 + 4 / 1) / 2
        ("seq-mean-token-sum-norm", 3, 10.0 / 6.0),  # (6 / 3 + 4 / 3) / 2
        ("seq-mean-token-sum-norm", 4, 1.25),  # (6 / 4 + 4 / 4) / 2
    ],
)
def test_aggregation_hand_values(
    mode: AggregationMode, max_len: int | None, expected: float
) -> None:
    norm = LossNormalizer.from_global_batch(MASK, mode, max_len)
    assert (norm.num_tokens, norm.num_seqs) == (4, 2)
    torch.testing.assert_close(aggregate_loss(LOSS, MASK, norm), torch.tensor(expected))
    # An all-padding row and NaN in masked-out positions change nothing.
    mask3 = torch.cat([MASK, torch.zeros(1, 3, dtype=MASK.dtype)])
    loss3 = torch.cat([LOSS, torch.full((1, 3), float("nan"))])
    loss3[1, 2] = float("inf")
    norm3 = LossNormalizer.from_global_batch(mask3, mode, max_len)
    assert norm3 == norm
    torch.testing.assert_close(aggregate_loss(loss3, mask3, norm3), torch.tensor(expected))


def test_normalizer_validation() -> None:
    with pytest.raises(ValueError):
        LossNormalizer.from_counts("seq-mean-token-sum-norm", 4, 2)
    with pytest.raises(ValueError):
        LossNormalizer.from_counts("sum", 4, 2)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        LossNormalizer.from_counts("token-mean", 1, 2)
    assert batch_counts(MASK).tolist() == [4, 2]


def _random_batch(seed: int, b: int = 8, t: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    lengths[3] = 0  # an empty completion must not break anything
    mask = (torch.arange(t).unsqueeze(0) < lengths.unsqueeze(1)).long()
    return torch.randn(b, t, generator=g, dtype=torch.float64), mask


@pytest.mark.parametrize("mode", AGGREGATION_MODES)
@pytest.mark.parametrize("chunks", [1, 2, 4])
def test_aggregation_is_split_invariant(mode: AggregationMode, chunks: int) -> None:
    loss, mask = _random_batch(1)
    norm = LossNormalizer.from_global_batch(mask, mode, max_len=6)
    full = aggregate_loss(loss, mask, norm)
    parts = sum(
        aggregate_loss(lc, mc, norm)
        for lc, mc in zip(loss.chunk(chunks), mask.chunk(chunks), strict=True)
    )
    torch.testing.assert_close(parts, full, atol=1e-6, rtol=0)
    if chunks > 1 and mode != "seq-mean-token-sum-norm":
        # Control: per-micro-batch normalisers (the naive way) give a different answer here.
        naive = sum(
            aggregate_loss(lc, mc, LossNormalizer.from_global_batch(mc, mode)) / chunks
            for lc, mc in zip(loss.chunk(chunks), mask.chunk(chunks), strict=True)
        )
        assert abs(float(naive) - float(full)) > 1e-3


@pytest.mark.parametrize("mode", AGGREGATION_MODES)
def test_normalizer_from_counts_reduced_over_ranks(mode: AggregationMode) -> None:
    loss, mask = _random_batch(2)
    full_norm = LossNormalizer.from_global_batch(mask, mode, max_len=6)
    # 2 "DP ranks" x 2 micro-batches; counts summed as an all-reduce would.
    ranks = [(loss[:4], mask[:4]), (loss[4:], mask[4:])]
    counts = sum(batch_counts(m) for _, m in ranks)
    norm = LossNormalizer.from_counts(mode, *counts.tolist(), max_len=6)
    assert norm == full_norm
    total = sum(
        aggregate_loss(lc, mc, norm)
        for lr, mr in ranks
        for lc, mc in zip(lr.chunk(2), mr.chunk(2), strict=True)
    )
    torch.testing.assert_close(total, aggregate_loss(loss, mask, full_norm), atol=1e-6, rtol=0)


def test_seq_mean_token_mean_with_sequences_split_along_time() -> None:
    # Context parallelism splits a sequence over calls; full lengths keep the result exact.
    loss, mask = _random_batch(3)
    norm = LossNormalizer.from_global_batch(mask, "seq-mean-token-mean")
    n = mask.sum(-1)
    halves = sum(
        aggregate_loss(lc, mc, norm, seq_num_tokens=n)
        for lc, mc in zip(loss.chunk(2, dim=1), mask.chunk(2, dim=1), strict=True)
    )
    torch.testing.assert_close(halves, aggregate_loss(loss, mask, norm), atol=1e-6, rtol=0)


# ---------------------------------------------------------------- grpo_loss

# B=2, T=2; second row has one completion token. Ratios [[1.5, 1.0], [0.5, pad]].
G_MASK = torch.tensor([[1, 1], [1, 0]])
G_LOGP = torch.log(torch.tensor([[1.5, 1.0], [0.5, 1.0]]))
G_ADV = torch.tensor([1.0, -1.0])


def _norm(mode: AggregationMode = "token-mean", mask: torch.Tensor = G_MASK) -> LossNormalizer:
    return LossNormalizer.from_global_batch(mask, mode, max_len=mask.shape[1])


def test_grpo_loss_hand_values_and_metrics() -> None:
    cfg = GrpoLossConfig(epsilon=0.2)
    loss, mx = grpo_loss(G_LOGP, torch.zeros(2, 2), G_ADV, G_MASK, cfg, _norm())
    # Token losses [[-1.2 (clip high), -1.0], [0.8 (clip low)]] -> (-1.2 - 1.0 + 0.8) / 3.
    torch.testing.assert_close(loss, torch.tensor(-1.4 / 3))
    torch.testing.assert_close(mx["loss/policy"], torch.tensor(-1.4 / 3))
    torch.testing.assert_close(mx["clip_frac"], torch.tensor(2 / 3))
    torch.testing.assert_close(mx["clip_frac/low"], torch.tensor(1 / 3))
    torch.testing.assert_close(mx["clip_frac/high"], torch.tensor(1 / 3))
    torch.testing.assert_close(mx["ratio/mean"], torch.tensor(1.0))  # (1.5 + 1 + 0.5) / 3
    torch.testing.assert_close(mx["ratio/min"], torch.tensor(0.5))
    torch.testing.assert_close(mx["ratio/max"], torch.tensor(1.5))
    assert "kl" not in mx and "tis/weight_mean" not in mx


def test_grpo_loss_with_k1_kl() -> None:
    cfg = GrpoLossConfig(beta=0.1, kl_estimator="k1")
    loss, mx = grpo_loss(
        G_LOGP, torch.zeros(2, 2), G_ADV, G_MASK, cfg, _norm(), ref_logprobs=torch.zeros(2, 2)
    )
    # k1 = logp - 0 = [ln1.5, 0, ln0.5] -> mean (0.4054651 - 0.6931472) / 3 = -0.0958940
    torch.testing.assert_close(mx["kl"], torch.tensor(-0.0958940))
    torch.testing.assert_close(mx["loss/kl"], torch.tensor(-0.00958940))
    torch.testing.assert_close(loss, torch.tensor(-1.4 / 3 - 0.00958940))


def test_grpo_loss_with_tis() -> None:
    cfg = GrpoLossConfig(tis_cap=2.0)
    rollout = torch.tensor([[-LN(3.0), LN(2.0)], [0.0, 0.0]])
    loss, mx = grpo_loss(
        G_LOGP, torch.zeros(2, 2), G_ADV, G_MASK, cfg, _norm(), rollout_logprobs=rollout
    )
    # w = min(exp(0 - rollout), 2) = [[2, 0.5], [1]]; (-1.2 * 2 - 1.0 * 0.5 + 0.8 * 1) / 3 = -0.7
    torch.testing.assert_close(loss, torch.tensor(-0.7))
    torch.testing.assert_close(mx["tis/weight_mean"], torch.tensor(3.5 / 3))
    torch.testing.assert_close(mx["tis/capped_frac"], torch.tensor(1 / 3))
    # exp(|old - rollout|) = (3 + 2 + 1) / 3
    torch.testing.assert_close(mx["mismatch/token_mult_prob_error"], torch.tensor(2.0))
    # Without tis_cap the rollout log-probs only feed the metric.
    loss0, mx0 = grpo_loss(
        G_LOGP,
        torch.zeros(2, 2),
        G_ADV,
        G_MASK,
        GrpoLossConfig(),
        _norm(),
        rollout_logprobs=rollout,
    )
    torch.testing.assert_close(loss0, torch.tensor(-1.4 / 3))
    assert "tis/weight_mean" not in mx0 and "mismatch/token_mult_prob_error" in mx0


@pytest.mark.parametrize("mode", AGGREGATION_MODES)
def test_grpo_loss_step0_gradient_is_minus_advantage_over_normaliser(mode: AggregationMode) -> None:
    logp = G_LOGP.clone().requires_grad_(True)
    norm = _norm(mode)
    loss, _ = grpo_loss(logp, None, G_ADV, G_MASK, GrpoLossConfig(loss_aggregation=mode), norm)
    loss.backward()
    # Per-token weight of each mode: 1/N = 1/3; 1/(n_i S) = [1/4, 1/2]; 1/(L S) = 1/4.
    weight = {
        "token-mean": torch.tensor([[1 / 3, 1 / 3], [1 / 3, 0.0]]),
        "seq-mean-token-mean": torch.tensor([[1 / 4, 1 / 4], [1 / 2, 0.0]]),
        "seq-mean-token-sum-norm": torch.tensor([[1 / 4, 1 / 4], [1 / 4, 0.0]]),
    }[mode]
    torch.testing.assert_close(logp.grad, -G_ADV.unsqueeze(1) * weight)


@pytest.mark.parametrize(
    ("mode", "expected"),
    # Token losses [[-1.2, left out], [0.8]]; normalisers unchanged: N = 3, n = [2, 1], S = 2.
    [("token-mean", -0.4 / 3), ("seq-mean-token-mean", (-1.2 / 2 + 0.8) / 2)],
)
def test_grpo_loss_leaves_out_tokens_outside_the_kept_set(mode, expected) -> None:
    # Top-k/top-p: a sampled token outside the trainer's kept set has log-prob -inf.
    for where in ("current", "old"):
        logp = G_LOGP.clone()
        old = torch.zeros(2, 2)
        (logp if where == "current" else old)[0, 1] = float("-inf")
        logp.requires_grad_(True)
        loss, mx = grpo_loss(logp, old, G_ADV, G_MASK, GrpoLossConfig(loss_aggregation=mode),
                             _norm(mode), rollout_logprobs=torch.zeros(2, 2))  # fmt: skip
        loss.backward()
        torch.testing.assert_close(loss, torch.tensor(expected))
        assert torch.isfinite(logp.grad).all() and logp.grad[0, 1] == 0
        torch.testing.assert_close(mx["mismatch/outside_kept_frac"], torch.tensor(1 / 3))
        torch.testing.assert_close(mx["ratio/mean"], torch.tensor(2.0 / 3))  # (1.5 + 0.5) / 3
        assert all(torch.isfinite(v) for v in mx.values())


def test_grpo_loss_kl_term_uses_kl_logprobs() -> None:
    # Truncated sampling: surrogate on the truncated log-probs, KL on the full ones.
    full = torch.log(torch.tensor([[0.5, 0.25], [0.25, 1.0]])).requires_grad_(True)
    logp = G_LOGP.clone().requires_grad_(True)
    cfg = GrpoLossConfig(beta=0.1, kl_estimator="k1")
    loss, mx = grpo_loss(logp, torch.zeros(2, 2), G_ADV, G_MASK, cfg, _norm(),
                         ref_logprobs=torch.zeros(2, 2), kl_logprobs=full)  # fmt: skip
    loss.backward()
    # k1 = full - 0 = [ln 0.5, ln 0.25, ln 0.25] -> mean (5 ln 0.5) / 3.
    torch.testing.assert_close(mx["kl"], torch.tensor(5 * LN(0.5) / 3))
    torch.testing.assert_close(loss, torch.tensor(-1.4 / 3 + 0.1 * 5 * LN(0.5) / 3))
    torch.testing.assert_close(full.grad, torch.tensor([[0.1 / 3, 0.1 / 3], [0.1 / 3, 0.0]]))
    # The surrogate's gradient alone (clipped tokens get none): the KL does not reach logp.
    torch.testing.assert_close(logp.grad, torch.tensor([[0.0, -1 / 3], [0.0, 0.0]]))


def test_grpo_loss_no_grad_into_constants() -> None:
    old = torch.zeros(2, 2, requires_grad=True)
    ref = torch.zeros(2, 2, requires_grad=True)
    rollout = torch.zeros(2, 2, requires_grad=True)
    adv = G_ADV.clone().requires_grad_(True)
    logp = G_LOGP.clone().requires_grad_(True)
    cfg = GrpoLossConfig(beta=0.1, tis_cap=2.0)
    loss, mx = grpo_loss(
        logp, old, adv, G_MASK, cfg, _norm(), ref_logprobs=ref, rollout_logprobs=rollout
    )
    loss.backward()
    assert logp.grad is not None
    assert old.grad is None and ref.grad is None and rollout.grad is None and adv.grad is None
    assert all(not v.requires_grad for v in mx.values())


def test_grpo_loss_ignores_garbage_in_padding() -> None:
    cfg = GrpoLossConfig(beta=0.1, tis_cap=2.0)
    args = (torch.zeros(2, 2), torch.zeros(2, 2), torch.zeros(2, 2))  # old, ref, rollout

    def run(pad: float, adv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logp = G_LOGP.clone()
        old, ref, rollout = (a.clone() for a in args)
        for x in (logp, old, ref, rollout):
            x[1, 1] = pad
        logp.requires_grad_(True)
        loss, _ = grpo_loss(
            logp, old, adv, G_MASK, cfg, _norm(), ref_logprobs=ref, rollout_logprobs=rollout
        )
        loss.backward()
        return loss, logp.grad

    clean_loss, clean_grad = run(0.0, G_ADV)
    nan_loss, nan_grad = run(float("nan"), G_ADV)
    inf_loss, inf_grad = run(float("-inf"), G_ADV)
    torch.testing.assert_close(nan_loss, clean_loss)
    torch.testing.assert_close(inf_loss, clean_loss)
    torch.testing.assert_close(nan_grad, clean_grad)
    torch.testing.assert_close(inf_grad, clean_grad)
    # NaN advantage on an all-padding row is harmless too.
    mask = torch.tensor([[1, 1], [0, 0]])
    logp = G_LOGP.clone().requires_grad_(True)
    loss, _ = grpo_loss(
        logp, None, torch.tensor([1.0, float("nan")]), mask, GrpoLossConfig(), _norm(mask=mask)
    )
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logp.grad).all()


@pytest.mark.parametrize("mode", AGGREGATION_MODES)
@pytest.mark.parametrize("chunks", [1, 2, 4])
def test_grpo_loss_and_metrics_split_invariant(mode: AggregationMode, chunks: int) -> None:
    g = torch.Generator().manual_seed(4)
    _, mask = _random_batch(5)
    b, t = mask.shape
    logp = -torch.rand(b, t, generator=g, dtype=torch.float64) * 2
    old = logp + 0.3 * torch.randn(b, t, generator=g, dtype=torch.float64)  # some clipping
    ref = logp + 0.2 * torch.randn(b, t, generator=g, dtype=torch.float64)
    rollout = old + 0.5 * torch.randn(b, t, generator=g, dtype=torch.float64)  # some capping
    adv = torch.randn(b, generator=g, dtype=torch.float64)
    cfg = GrpoLossConfig(
        epsilon=0.2, epsilon_high=0.28, beta=0.05, loss_aggregation=mode, tis_cap=1.5
    )
    norm = LossNormalizer.from_global_batch(mask, mode, max_len=t)

    def run(sl: slice) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        lp = logp[sl].clone().requires_grad_(True)
        loss, mx = grpo_loss(lp, old[sl], adv[sl], mask[sl], cfg, norm, ref[sl], rollout[sl])
        loss.backward()
        return loss, mx, lp.grad

    full_loss, full_mx, full_grad = run(slice(None))
    step = b // chunks
    parts = [run(slice(i, i + step)) for i in range(0, b, step)]
    torch.testing.assert_close(sum(p[0] for p in parts), full_loss, atol=1e-6, rtol=0)
    torch.testing.assert_close(torch.cat([p[2] for p in parts]), full_grad, atol=1e-6, rtol=0)
    combined = combine_metrics(p[1] for p in parts)
    assert combined.keys() == full_mx.keys()
    for k, v in full_mx.items():
        torch.testing.assert_close(combined[k], v, atol=1e-6, rtol=0, msg=k)
    # The data exercises every branch.
    assert 0 < full_mx["clip_frac"] < 1 and 0 < full_mx["tis/capped_frac"] < 1


def test_metric_reduce_ops_and_empty_microbatch() -> None:
    assert metric_reduce_op("ratio/min") == "min"
    assert metric_reduce_op("ratio/max") == "max"
    assert metric_reduce_op("clip_frac/low") == "sum"
    empty = torch.zeros(1, 2, dtype=torch.long)
    _, mx = grpo_loss(G_LOGP[:1], None, G_ADV[:1], empty, GrpoLossConfig(), _norm())
    # Identity elements: an empty micro-batch must not move the min / max / sums.
    assert mx["ratio/min"].item() == math.inf and mx["ratio/max"].item() == -math.inf
    assert mx["clip_frac"].item() == 0.0 and mx["loss/policy"].item() == 0.0


def test_grpo_loss_upcasts_bf16() -> None:
    loss, _ = grpo_loss(G_LOGP.to(torch.bfloat16), None, G_ADV, G_MASK, GrpoLossConfig(), _norm())
    assert loss.dtype == torch.float32


@pytest.mark.parametrize(
    "kwargs",
    [
        {"epsilon": -0.1},
        {"epsilon_high": -0.1},
        {"beta": -1.0},
        {"kl_estimator": "k9"},
        {"loss_aggregation": "sum"},
        {"tis_cap": 0.0},
    ],
)
def test_config_validation(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        GrpoLossConfig(**kwargs)


def test_grpo_loss_argument_validation() -> None:
    with pytest.raises(ValueError, match="norm.mode"):
        grpo_loss(G_LOGP, None, G_ADV, G_MASK, GrpoLossConfig(), _norm("seq-mean-token-mean"))
    with pytest.raises(ValueError, match="ref_logprobs"):
        grpo_loss(G_LOGP, None, G_ADV, G_MASK, GrpoLossConfig(beta=0.1), _norm())
    with pytest.raises(ValueError, match="rollout_logprobs"):
        grpo_loss(G_LOGP, None, G_ADV, G_MASK, GrpoLossConfig(tis_cap=2.0), _norm())

"""grpo_loss: every loss type, rollout correction, KL, metrics; invariance to how the batch is
split (micro-batches, data-parallel ranks, context-parallel halves of sequences)."""

import math
import threading

import pytest
import torch
from _loss_helpers import random_batch

from oumi_megatron.algorithms import (
    AGGREGATION_MODES,
    AggregationMode,
    GrpoLossConfig,
    LossNormalizer,
    ObjectiveParams,
    RolloutCorrection,
    combine_metrics,
    grpo_loss,
    metric_reduce_op,
)

LN = math.log
TIS2 = RolloutCorrection(importance_sampling="token", is_cap=2.0)


# ---------------------------------------------------------------- grpo_loss

# B=2, T=2; second row has one completion token. Ratios [[1.5, 1.0], [0.5, pad]].
G_MASK = torch.tensor([[1, 1], [1, 0]])
G_LOGP = torch.log(torch.tensor([[1.5, 1.0], [0.5, 1.0]]))
G_ADV = torch.tensor([1.0, -1.0])


def _norm(mode: AggregationMode = "token-mean", mask: torch.Tensor = G_MASK) -> LossNormalizer:
    return LossNormalizer.from_global_batch(mask, mode, scale_factor=mask.shape[1])


def test_grpo_loss_hand_values_and_metrics() -> None:
    cfg = GrpoLossConfig()
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
    assert "kl" not in mx and "rollout_correction/weight_mean" not in mx


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
    cfg = GrpoLossConfig(correction=TIS2)
    rollout = torch.tensor([[-LN(3.0), LN(2.0)], [0.0, 0.0]])
    loss, mx = grpo_loss(
        G_LOGP, torch.zeros(2, 2), G_ADV, G_MASK, cfg, _norm(), rollout_logprobs=rollout
    )
    # w = min(exp(0 - rollout), 2) = [[2, 0.5], [1]]; (-1.2 * 2 - 1.0 * 0.5 + 0.8 * 1) / 3 = -0.7
    torch.testing.assert_close(loss, torch.tensor(-0.7))
    torch.testing.assert_close(mx["rollout_correction/weight_mean"], torch.tensor(3.5 / 3))
    torch.testing.assert_close(mx["rollout_correction/capped_token_frac"], torch.tensor(1 / 3))
    # One of the two sequences has a capped token.
    torch.testing.assert_close(mx["rollout_correction/capped_seq_frac"], torch.tensor(1 / 2))
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
    assert "rollout_correction/weight_mean" not in mx0
    assert "mismatch/token_mult_prob_error" in mx0


@pytest.mark.parametrize("mode", AGGREGATION_MODES)
def test_grpo_loss_step0_gradient_is_minus_advantage_over_normaliser(mode: AggregationMode) -> None:
    logp = G_LOGP.clone().requires_grad_(True)
    norm = _norm(mode)
    loss, _ = grpo_loss(logp, None, G_ADV, G_MASK, GrpoLossConfig(loss_aggregation=mode), norm)
    loss.backward()
    # Per-token weight of each mode: 1/N = 1/3; 1; 1/S = 1/2; 1/(n_i S) = [1/4, 1/2];
    # 1/(L S) = 1/4.
    weight = {
        "token-mean": torch.tensor([[1 / 3, 1 / 3], [1 / 3, 0.0]]),
        "token-sum": torch.tensor([[1.0, 1.0], [1.0, 0.0]]),
        "seq-mean-token-sum": torch.tensor([[1 / 2, 1 / 2], [1 / 2, 0.0]]),
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
    cfg = GrpoLossConfig(beta=0.1, correction=TIS2)
    loss, mx = grpo_loss(
        logp, old, adv, G_MASK, cfg, _norm(), ref_logprobs=ref, rollout_logprobs=rollout
    )
    loss.backward()
    assert logp.grad is not None
    assert old.grad is None and ref.grad is None and rollout.grad is None and adv.grad is None
    assert all(not v.requires_grad for v in mx.values())


def test_grpo_loss_ignores_garbage_in_padding() -> None:
    cfg = GrpoLossConfig(beta=0.1, correction=TIS2)
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
    _, mask = random_batch(5)
    b, t = mask.shape
    logp = -torch.rand(b, t, generator=g, dtype=torch.float64) * 2
    old = logp + 0.3 * torch.randn(b, t, generator=g, dtype=torch.float64)  # some clipping
    ref = logp + 0.2 * torch.randn(b, t, generator=g, dtype=torch.float64)
    rollout = old + 0.5 * torch.randn(b, t, generator=g, dtype=torch.float64)  # some capping
    adv = torch.randn(b, generator=g, dtype=torch.float64)
    cfg = GrpoLossConfig(
        params=ObjectiveParams(epsilon=0.2, epsilon_high=0.28),
        beta=0.05,
        loss_aggregation=mode,
        correction=RolloutCorrection(importance_sampling="token", is_cap=1.5),
    )
    norm = LossNormalizer.from_global_batch(mask, mode, scale_factor=t)

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
    assert 0 < full_mx["clip_frac"] < 1
    assert 0 < full_mx["rollout_correction/capped_token_frac"] < 1


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
        {"params": ObjectiveParams(epsilon=-0.1)},
        {"params": ObjectiveParams(epsilon_high=-0.1)},
        {"params": ObjectiveParams(clip_ratio_c=1.0)},
        {"objective": "ppo"},
        {"beta": -1.0},
        {"kl_estimator": "k9"},
        {"loss_aggregation": "sum"},
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
        grpo_loss(G_LOGP, None, G_ADV, G_MASK, GrpoLossConfig(correction=TIS2), _norm())
    with pytest.raises(ValueError, match="is_cap"):
        RolloutCorrection(importance_sampling="token", is_cap=0.0)
    with pytest.raises(ValueError, match="rejection_low"):
        RolloutCorrection(rejection="token", rejection_low=2.0, rejection_high=1.0)


# ---------------------------------------------------------------- rollout correction


@pytest.mark.parametrize(
    ("correction", "expected", "touched"),
    [
        # Token ratios pi_old / pi_rollout: row 0 [3, 0.5] (product 1.5, geometric mean
        # 1.2247449), row 1 [1]. Policy-gradient token losses [[-1.2, -1.0], [0.8]], N = 3.
        # Sequence TIS (cap 2): weights [1.5, 1.5], [1].
        (RolloutCorrection(importance_sampling="sequence", is_cap=2.0), -2.5 / 3, {}),
        # Sequence TIS with cap 1.2: row 0 capped at 1.2 (both tokens, one sequence).
        (
            RolloutCorrection(importance_sampling="sequence", is_cap=1.2),
            (-1.2 * 1.2 - 1.2 + 0.8) / 3,
            {"capped_token_frac": 2 / 3, "capped_seq_frac": 1 / 2},
        ),
        # Token rejection outside [0.5, 2]: the ratio-3 token gets weight 0 (0.5 is kept).
        (
            RolloutCorrection(rejection="token"),
            (-1.0 + 0.8) / 3,
            {"rejected_token_frac": 1 / 3, "rejected_seq_frac": 1 / 2},
        ),
        # Sequence rejection: the product 1.5 is inside [0.5, 2], outside [0.5, 1.4].
        (RolloutCorrection(rejection="sequence"), -1.4 / 3, {"rejected_token_frac": 0.0}),
        (
            RolloutCorrection(rejection="sequence", rejection_high=1.4),
            0.8 / 3,
            {"rejected_token_frac": 2 / 3, "rejected_seq_frac": 1 / 2},
        ),
        # Geometric rejection outside [0.9, 1.1] rejects row 0 (1.2247) but not row 1.
        (
            RolloutCorrection(rejection="geometric", rejection_low=0.9, rejection_high=1.1),
            0.8 / 3,
            {"rejected_token_frac": 2 / 3, "rejected_seq_frac": 1 / 2},
        ),
        # Token TIS (cap 2) and geometric rejection together: row 0 rejected, row 1 weight 1.
        (
            RolloutCorrection("token", 2.0, "geometric", 0.9, 1.1),
            0.8 / 3,
            {"capped_token_frac": 1 / 3, "rejected_token_frac": 2 / 3},
        ),
    ],
)
def test_rollout_correction_hand_values(correction, expected, touched) -> None:
    rollout = -torch.log(torch.tensor([[3.0, 0.5], [1.0, 1.0]]))  # old = 0
    cfg = GrpoLossConfig(correction=correction)
    logp = G_LOGP.clone().requires_grad_(True)
    loss, mx = grpo_loss(logp, torch.zeros(2, 2), G_ADV, G_MASK, cfg, _norm(),
                         rollout_logprobs=rollout)  # fmt: skip
    torch.testing.assert_close(loss, torch.tensor(expected))
    for name, value in touched.items():
        torch.testing.assert_close(mx[f"rollout_correction/{name}"], torch.tensor(value))
    # Rejected tokens have no gradient; the normaliser is unchanged (N = 3).
    loss.backward()
    assert torch.isfinite(logp.grad).all()


# ---------------------------------------------------------------- every loss type, any split

LOSS_CASES = {
    "grpo": ("clip", "seq-mean-token-mean", ObjectiveParams()),
    "dr_grpo": ("clip", "seq-mean-token-sum-norm", ObjectiveParams()),
    "dapo_dual": ("clip", "token-mean", ObjectiveParams(epsilon_high=0.28, clip_ratio_c=3.0)),
    "seq_sum": ("clip", "seq-mean-token-sum", ObjectiveParams()),
    "token_sum": ("clip", "token-sum", ObjectiveParams()),
    "gspo": ("gspo", "seq-mean-token-mean", ObjectiveParams(epsilon=0.05, epsilon_high=0.08)),
    "gspo_token_mean": ("gspo", "token-mean", ObjectiveParams(epsilon=0.05, epsilon_high=0.08)),
    "cispo": ("cispo", "token-mean", ObjectiveParams(epsilon_high=0.2)),
    "sapo": ("sapo", "seq-mean-token-mean", ObjectiveParams()),
}
CORRECTIONS = {
    "seq_tis+geo": RolloutCorrection("sequence", 1.5, "geometric", 0.8, 1.25),
    "tok_tis+seq_rej": RolloutCorrection("token", 1.5, "sequence", 0.6, 1.6),
}


class _PairSum:
    """An all-reduce (sum) between two threads, standing in for two context-parallel ranks."""

    def __init__(self) -> None:
        self.barrier = threading.Barrier(2, timeout=30)
        self.slots: list[torch.Tensor | None] = [None, None]

    def of(self, rank: int):
        def seq_sum(partial: torch.Tensor) -> torch.Tensor:
            self.slots[rank] = partial.detach().clone()
            self.barrier.wait()
            total = self.slots[0] + self.slots[1]
            self.barrier.wait()
            return total

        return seq_sum


def _loss_inputs(seed: int):
    g = torch.Generator().manual_seed(seed)
    _, mask = random_batch(5)
    b, t = mask.shape
    logp = -torch.rand(b, t, generator=g, dtype=torch.float64) * 2
    old = logp + 0.3 * torch.randn(b, t, generator=g, dtype=torch.float64)  # some clipping
    ref = logp + 0.2 * torch.randn(b, t, generator=g, dtype=torch.float64)
    rollout = old + 0.4 * torch.randn(b, t, generator=g, dtype=torch.float64)
    adv = torch.randn(b, generator=g, dtype=torch.float64)
    return logp, old, ref, rollout, adv, mask


@pytest.mark.parametrize("correction", list(CORRECTIONS))
@pytest.mark.parametrize("case", list(LOSS_CASES))
@pytest.mark.parametrize("split", ["rows2", "rows4", "time2"])
def test_every_loss_split_invariant(case: str, correction: str, split: str) -> None:
    """Micro-batches / DP ranks (rows) and context-parallel halves (time) sum to the full
    batch's loss, gradient and metrics (fp64, <= 1e-12)."""
    objective, mode, params = LOSS_CASES[case]
    cfg = GrpoLossConfig(objective=objective, params=params, beta=0.05, kl_estimator="k3+",
                         loss_aggregation=mode, correction=CORRECTIONS[correction])  # fmt: skip
    logp, old, ref, rollout, adv, mask = _loss_inputs(6)
    norm = LossNormalizer.from_global_batch(mask, mode, scale_factor=mask.shape[1])
    counts = mask.sum(-1)

    def run(rows: slice, cols: slice, seq_sum=None):
        lp = logp[rows, cols].clone().requires_grad_(True)
        extra = {"seq_sum": seq_sum, "seq_num_tokens": counts[rows]} if seq_sum else {}
        loss, mx = grpo_loss(lp, old[rows, cols], adv[rows], mask[rows, cols], cfg, norm,
                             ref[rows, cols], rollout[rows, cols], **extra)  # fmt: skip
        loss.backward()
        return loss, mx, lp.grad

    full_loss, full_mx, full_grad = run(slice(None), slice(None))
    b, t = mask.shape
    if split.startswith("rows"):
        step = b // int(split[-1])
        parts = [run(slice(i, i + step), slice(None)) for i in range(0, b, step)]
        grad = torch.cat([p[2] for p in parts])
    else:
        pair, results = _PairSum(), [None, None]
        halves = [slice(0, t // 2), slice(t // 2, t)]

        def rank(r: int) -> None:
            results[r] = run(slice(None), halves[r], pair.of(r))

        threads = [threading.Thread(target=rank, args=(r,)) for r in (0, 1)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        parts = results
        grad = torch.cat([p[2] for p in parts], dim=1)
    torch.testing.assert_close(sum(p[0] for p in parts), full_loss, atol=1e-12, rtol=0)
    torch.testing.assert_close(grad, full_grad, atol=1e-12, rtol=0)
    combined = combine_metrics(p[1] for p in parts)
    assert combined.keys() == full_mx.keys()
    for k, v in full_mx.items():
        torch.testing.assert_close(combined[k], v, atol=1e-12, rtol=0, msg=k)
    # The data exercises the correction's branches.
    touched = [k for k in full_mx if k.endswith("_frac") and k.startswith("rollout_correction")]
    assert all(0 < float(full_mx[k]) < 1 for k in touched), {k: full_mx[k] for k in touched}

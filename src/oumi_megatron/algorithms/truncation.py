"""Top-k / top-p truncation with vLLM's rules, and log-probs of the truncated distribution.

With ``top_k``/``top_p`` the rollout engine samples from ``softmax(mask(logits / T))`` and
reports that distribution's log-probs (vLLM's ``processed_logprobs``). The trainer must compute
the same quantity, so :func:`apply_top_k_top_p` is the one implementation of the mask, used by
the rollout engines (``rollout/sampling.py``) and here.

The mask needs whole vocabulary rows (a sort and a cumulative sum), but each tensor-parallel
rank holds only a vocabulary slice. Per chunk of tokens, an all-to-all turns the chunk's
``[tokens, V / TP]`` slices into ``[tokens / TP, V]`` full rows: each rank masks and normalises
a share of the tokens, then the per-token results are shared. A rank never holds more than
its chunk's worth of logits (plus the sort of ``SORT_ROWS`` rows), and no rank repeats
another's work. Backward recomputes the chunk (same exchange, same mask) instead of storing it.
Pure torch + torch.distributed.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

# Rows sorted at once: the sort's values and int64 indices cost 12 bytes per vocabulary entry
# (1.8 GB for 1,024 rows of a 152k vocabulary), so rows are masked in blocks of this many.
SORT_ROWS = 256


def truncation_active(top_k: int | None, top_p: float, vocab_size: int) -> bool:
    """Whether top-k/top-p change the distribution (vLLM: ``0 < top_k < V``, ``top_p < 1``)."""
    return (top_k is not None and 0 < top_k < vocab_size) or top_p < 1.0


def apply_top_k_top_p(logits: torch.Tensor, top_k: int | None, top_p: float) -> torch.Tensor:
    """Set logits outside the top-k / top-p set to -inf (returns a new tensor).

    Same rules as vLLM: top-k keeps every token whose logit is >= the k-th largest (ties
    kept); top-p then drops, from the least likely up, tokens whose cumulative probability
    (renormalised after top-k) is <= 1 - p, always keeping the most likely token.
    ``top_k`` None or <= 0 and ``top_p`` 1 disable each rule.
    """
    vocab = logits.shape[-1]
    use_k = top_k is not None and 0 < top_k < vocab
    use_p = top_p < 1.0
    if not (use_k or use_p):
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=False)
    if use_k:
        kth_largest = sorted_logits[..., vocab - top_k : vocab - top_k + 1]
        sorted_logits = sorted_logits.masked_fill(sorted_logits < kth_largest, float("-inf"))
    if use_p:
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop = cumulative <= 1.0 - top_p
        drop[..., -1] = False  # the most likely token always survives
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
    return torch.empty_like(sorted_logits).scatter_(-1, order, sorted_logits)


def _truncated_log_softmax(rows: torch.Tensor, top_k: int | None, top_p: float) -> torch.Tensor:
    """``log_softmax(apply_top_k_top_p(rows))`` of full fp32 rows, ``SORT_ROWS`` at a time."""
    out = torch.empty_like(rows)
    for start in range(0, rows.shape[0], SORT_ROWS):
        block = rows[start : start + SORT_ROWS]
        out[start : start + SORT_ROWS] = torch.log_softmax(
            apply_top_k_top_p(block, top_k, top_p), dim=-1
        )
    return out


def _tp_size(group) -> int:
    return dist.get_world_size(group) if group is not None else 1


def _tp_rank(group) -> int:
    return dist.get_rank(group) if group is not None else 0


class _ChunkRows:
    """One chunk of tokens regrouped as this rank's share of full vocabulary rows."""

    def __init__(self, logits, target, temperature, group):
        tp = _tp_size(group)
        self.group, self.tokens = group, logits.shape[0]
        padded = -(-self.tokens // tp) * tp  # pad so the chunk splits evenly over TP ranks
        scaled = logits.float() / temperature
        if padded != self.tokens:
            scaled = torch.cat([scaled, scaled.new_zeros(padded - self.tokens, scaled.shape[1])])
            target = torch.cat([target, target.new_zeros(padded - self.tokens)])
        self.share = padded // tp
        self.start = _tp_rank(group) * self.share
        self.rows = _vocab_to_token_parallel(scaled, group)  # [share, V]
        self.target = target[self.start : self.start + self.share]

    def mine(self, per_token: torch.Tensor) -> torch.Tensor:
        """This rank's share of a chunk-long per-token tensor (e.g. the incoming gradient)."""
        padded = torch.zeros(self.share * _tp_size(self.group), dtype=per_token.dtype,
                             device=per_token.device)  # fmt: skip
        padded[: self.tokens] = per_token
        return padded[self.start : self.start + self.share]

    def share_out(self, values: torch.Tensor) -> torch.Tensor:
        """Every rank's per-token values, chunk-long (each slot is filled by one rank)."""
        full = values.new_zeros(self.share * _tp_size(self.group))
        full[self.start : self.start + self.share] = values
        if _tp_size(self.group) > 1:
            dist.all_reduce(full, group=self.group)
        return full[: self.tokens]


def _vocab_to_token_parallel(chunk: torch.Tensor, group) -> torch.Tensor:
    """``[tp * s, V / tp]`` (this rank's vocabulary slice) -> ``[s, V]`` (its rows, whole)."""
    tp = _tp_size(group)
    if tp == 1:
        return chunk
    received = torch.empty_like(chunk)
    dist.all_to_all_single(received, chunk.contiguous(), group=group)
    share = chunk.shape[0] // tp
    # Block i came from rank i: vocabulary slice i of this rank's rows.
    return received.view(tp, share, -1).transpose(0, 1).reshape(share, -1)


def _token_to_vocab_parallel(rows: torch.Tensor, group) -> torch.Tensor:
    """Inverse of :func:`_vocab_to_token_parallel`."""
    tp = _tp_size(group)
    if tp == 1:
        return rows
    share, vocab = rows.shape
    send = rows.view(share, tp, vocab // tp).transpose(0, 1).reshape(tp * share, vocab // tp)
    received = torch.empty_like(send)
    dist.all_to_all_single(received, send, group=group)
    return received


def _picked(logprobs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return logprobs.gather(-1, target.unsqueeze(-1)).squeeze(-1)


class _TruncatedLogprob(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, target, temperature, top_k, top_p, group, chunk_tokens):
        logprobs = torch.empty(target.shape, dtype=torch.float32, device=logits.device)
        for start in range(0, target.shape[0], chunk_tokens):
            end = start + chunk_tokens
            chunk = _ChunkRows(logits[start:end], target[start:end], temperature, group)
            rows_logprobs = _truncated_log_softmax(chunk.rows, top_k, top_p)
            logprobs[start:end] = chunk.share_out(_picked(rows_logprobs, chunk.target))
        ctx.save_for_backward(logits, target)
        ctx.settings = (temperature, top_k, top_p, group, chunk_tokens)
        return logprobs

    @staticmethod
    def backward(ctx, grad_output):
        logits, target = ctx.saved_tensors
        temperature, top_k, top_p, group, chunk_tokens = ctx.settings
        grad_logits = torch.empty_like(logits)
        for start in range(0, target.shape[0], chunk_tokens):
            end = start + chunk_tokens
            chunk = _ChunkRows(logits[start:end], target[start:end], temperature, group)
            rows_logprobs = _truncated_log_softmax(chunk.rows, top_k, top_p)
            # d log p_t / d z_j = [j == t] - p_j over the kept set; p_j = 0 off it, so masked
            # logits get no gradient. A target outside the kept set has log p = -inf, a
            # constant: its row gets no gradient at all.
            target_kept = torch.isfinite(_picked(rows_logprobs, chunk.target))
            grad = torch.where(target_kept, chunk.mine(grad_output[start:end].float()), 0.0)
            grad_rows = -rows_logprobs.exp() * grad.unsqueeze(-1)
            rows = torch.nonzero(target_kept).squeeze(-1)
            grad_rows[rows, chunk.target[rows]] += grad[rows]
            grad_chunk = _token_to_vocab_parallel(grad_rows / temperature, group)
            grad_logits[start:end] = grad_chunk[: chunk.tokens].to(logits.dtype)
        return grad_logits, None, None, None, None, None, None


def truncated_logprobs(logits, target, temperature, top_k, top_p, group, chunk_tokens):
    """log-probs of ``target`` under the truncated distribution; flat ``[N, V/TP]`` logits."""
    return _TruncatedLogprob.apply(logits, target, temperature, top_k, top_p, group, chunk_tokens)


@torch.no_grad()
def truncated_entropy(logits, temperature, top_k, top_p, group, chunk_tokens) -> torch.Tensor:
    """Entropy of the truncated distribution per token; flat ``[N, V/TP]`` logits."""
    entropy = torch.empty(logits.shape[0], dtype=torch.float32, device=logits.device)
    no_target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    for start in range(0, logits.shape[0], chunk_tokens):
        end = start + chunk_tokens
        chunk = _ChunkRows(logits[start:end], no_target[start:end], temperature, group)
        rows_logprobs = _truncated_log_softmax(chunk.rows, top_k, top_p)
        # Dropped tokens have p = 0 and log p = -inf: select them away (0 * -inf is NaN).
        plogp = torch.where(torch.isfinite(rows_logprobs), rows_logprobs.exp() * rows_logprobs, 0.0)
        entropy[start:end] = chunk.share_out(-plogp.sum(-1))
    return entropy

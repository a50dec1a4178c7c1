"""Sequence packing: token-budgeted micro-batches balanced over DP ranks, packed/padded tensors.

Shift convention. Per-sequence inputs are *token-aligned*: ``x[k]`` describes token ``k``
(input ids, completion mask, old/ref log-prob of token ``k``; index 0 has no prediction).
Batches are *target-aligned*: position ``j`` holds ``input_ids = x_j`` and
``labels = x_{j+1}``, and ``loss_mask`` / ``aux`` hold the values of token ``j+1``, so
``log_softmax(logits[j])[labels[j]]`` is ``log p(x_{j+1} | x_<=j)`` and every per-position
loss term lines up. A sequence's last position and all padding have ``labels = pad_token_id``
(a valid id: vocab-parallel cross entropy cannot take -100) and ``loss_mask = 0``.
:meth:`unpack` maps per-position outputs back to token-aligned per-sequence tensors.

Empty micro-batch. A bin ``[]`` (padding so every DP rank runs the same number of
micro-batches) packs to one all-padding row (``loss_mask`` all 0, ``is_empty`` True): it can
run through the pipeline schedule and contributes exactly zero loss and gradient.
"""

from __future__ import annotations

import dataclasses
import functools
import heapq
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Self

import torch
from torch import Tensor


def round_up(n: int, multiple: int) -> int:
    """The least multiple of ``multiple`` that is ≥ ``n``."""
    return -(-n // multiple) * multiple


def _budget_lengths(lengths: Sequence[int], max_tokens: int, multiple: int = 1) -> list[int]:
    """Lengths rounded up to ``multiple``, checked against the budget (clear error if not)."""
    if max_tokens < 1 or multiple < 1:
        raise ValueError(f"max_tokens ({max_tokens}) and multiples must be >= 1")
    out = []
    for i, n in enumerate(lengths):
        if n < 1:
            raise ValueError(f"sequence {i} has length {n}; every sequence needs >= 1 token")
        padded = round_up(n, multiple)
        if padded > max_tokens:
            extra = f" ({padded} after padding to a multiple of {multiple})" if padded != n else ""
            raise ValueError(
                f"sequence {i} has {n} tokens{extra}, more than the micro-batch token budget "
                f"max_tokens={max_tokens}. Fix: raise megatron.max_tokens_per_microbatch to at "
                f"least {padded} (or lower grpo.max_prompt_length / grpo.max_completion_length)."
            )
        out.append(padded)
    return out


def first_fit_decreasing(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Pack sequence indices into bins of at most ``max_tokens`` tokens (first-fit decreasing).

    Longest first, ties by index; each goes to the first open bin it fits in. Deterministic.
    """
    sizes = _budget_lengths(lengths, max_tokens)
    bins: list[list[int]] = []
    free: list[int] = []
    for i in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        slot = next((b for b, room in enumerate(free) if room >= sizes[i]), None)
        if slot is None:
            bins.append([])
            free.append(max_tokens)
            slot = len(bins) - 1
        bins[slot].append(i)
        free[slot] -= sizes[i]
    return bins


def _spread(sizes: list[int], num_bins: int, max_tokens: int) -> list[list[int]] | None:
    """Longest-first into the currently lightest of ``num_bins`` bins; None if one overflows."""
    bins: list[list[int]] = [[] for _ in range(num_bins)]
    heap = [(0, b) for b in range(num_bins)]
    for i in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        load, b = heapq.heappop(heap)
        if load + sizes[i] > max_tokens:  # The lightest bin is the roomiest: nothing fits.
            return None
        bins[b].append(i)
        heapq.heappush(heap, (load + sizes[i], b))
    return bins


@dataclass(frozen=True)
class PackingStats:
    """Token accounting of a :class:`PackingPlan` (real tokens, no padding)."""

    num_microbatches: int
    tokens_per_rank: list[int]
    sequences_per_rank: list[int]
    num_empty_bins: int
    max_tokens: int

    @property
    def efficiency(self) -> float:
        """Real tokens / (micro-batches x ranks x budget): 1.0 means no padding at all."""
        capacity = self.num_microbatches * len(self.tokens_per_rank) * self.max_tokens
        return sum(self.tokens_per_rank) / capacity

    @property
    def imbalance(self) -> float:
        """Most loaded rank's tokens / mean tokens per rank (1.0 = perfectly balanced)."""
        mean = sum(self.tokens_per_rank) / len(self.tokens_per_rank)
        return max(self.tokens_per_rank) / mean if mean else 1.0

    def as_metrics(self, prefix: str = "packing/") -> dict[str, float]:
        """Scalars for the metrics logger."""
        return {
            f"{prefix}num_microbatches": float(self.num_microbatches),
            f"{prefix}efficiency": self.efficiency,
            f"{prefix}imbalance": self.imbalance,
            f"{prefix}empty_microbatches": float(self.num_empty_bins),
        }


@dataclass(frozen=True)
class PackingPlan:
    """``bins[rank][microbatch]`` = sequence indices of that micro-batch (``[]`` = empty)."""

    bins: list[list[list[int]]]
    stats: PackingStats

    @property
    def num_microbatches(self) -> int:
        """Micro-batches per rank (the same on every rank)."""
        return self.stats.num_microbatches

    def for_rank(self, rank: int) -> list[list[int]]:
        """The micro-batches of data-parallel rank ``rank``."""
        return self.bins[rank]


def plan_microbatches(
    lengths: Sequence[int],
    max_tokens: int,
    dp_size: int,
    *,
    pad_sequences_to_multiple: int = 1,
    microbatch_multiple: int = 1,
) -> PackingPlan:
    """Split the sequences of one global step into micro-batches for every DP rank.

    1. ``M = ceil(#FFD bins / dp_size)`` (rounded up to ``microbatch_multiple``, e.g. what an
       interleaved pipeline schedule needs): the fewest micro-batches per rank that fit.
    2. Spread the sequences longest-first over the ``dp_size * M`` bins, always into the
       lightest one, so bins are evenly filled; if a bin would overflow, fall back to the FFD
       bins plus empty ones.
    3. Heaviest bin first to the rank with the fewest tokens that still has a free slot.

    ``pad_sequences_to_multiple`` rounds every length up first (context parallelism needs each
    packed sequence divisible by 2 x CP); pass the same value to :func:`pack_bin`.
    """
    if dp_size < 1 or microbatch_multiple < 1:
        raise ValueError(f"dp_size ({dp_size}) and microbatch_multiple must be >= 1")
    sizes = _budget_lengths(lengths, max_tokens, pad_sequences_to_multiple)
    num_mb = round_up(max(1, -(-len(first_fit_decreasing(sizes, max_tokens)) // dp_size)),
                      microbatch_multiple)  # fmt: skip
    num_bins = num_mb * dp_size
    bins = _spread(sizes, num_bins, max_tokens)
    if bins is None:
        bins = first_fit_decreasing(sizes, max_tokens)
        bins += [[] for _ in range(num_bins - len(bins))]
    load = [sum(sizes[i] for i in b) for b in bins]
    ranks: list[list[list[int]]] = [[] for _ in range(dp_size)]
    rank_load = [0] * dp_size
    for b in sorted(range(num_bins), key=lambda b: (-load[b], b)):
        r = min((r for r in range(dp_size) if len(ranks[r]) < num_mb),
                key=lambda r: (rank_load[r], len(ranks[r]), r))  # fmt: skip
        ranks[r].append(bins[b])
        rank_load[r] += load[b]
    stats = PackingStats(
        num_microbatches=num_mb,
        tokens_per_rank=[sum(lengths[i] for b in rb for i in b) for rb in ranks],
        sequences_per_rank=[sum(len(b) for b in rb) for rb in ranks],
        num_empty_bins=sum(not b for rb in ranks for b in rb),
        max_tokens=max_tokens,
    )
    return PackingPlan(bins=ranks, stats=stats)


@dataclass(frozen=True, kw_only=True)
class MicroBatch:
    """Tensors of one micro-batch, target-aligned (see the module docstring).

    ``aux`` holds per-position extras shaped like ``input_ids`` (old/ref log-probs,
    advantages, ...). ``seq_starts[k]`` is where sequence ``k`` begins in the flattened batch.
    """

    input_ids: Tensor
    position_ids: Tensor
    labels: Tensor
    loss_mask: Tensor
    aux: dict[str, Tensor]
    max_seqlen: int
    seq_lengths: list[int]
    sequence_indices: list[int]
    seq_starts: list[int]
    # Each sequence's loss tokens when the batch holds only part of it (a context-parallel
    # shard, see `data.context_parallel`); None: count them in ``loss_mask``.
    seq_targets: list[int] | None = None
    # A packed context-parallel shard's `data.context_parallel.attention_layout`.
    cp_layout: dict[str, Tensor] | None = None

    @property
    def is_empty(self) -> bool:
        """True for a padding-only micro-batch (zero loss and gradient)."""
        return not self.seq_lengths

    @property
    def num_tokens(self) -> int:
        """Real (non-padding) tokens."""
        return sum(self.seq_lengths)

    def to(self, device: torch.device | str) -> Self:
        """Copy with every tensor on ``device``, the row gather of :meth:`to_rows` included:
        built here, before any kernel is queued, so the loss never waits on a host copy.
        Host tensors go to a GPU from pinned memory without waiting; a batch already there
        (gather built) is returned as it is."""
        device = torch.device(device)
        tensors = {k: v for k, v in vars(self).items() if isinstance(v, Tensor)}
        layout = self.cp_layout or {}
        if "_row_gather" in vars(self) and all(
            _on(t, device) for t in [*tensors.values(), *self.aux.values(), *layout.values()]
        ):
            return self
        moved = {k: _moved(v, device) for k, v in tensors.items()}
        aux = {k: _moved(v, device) for k, v in self.aux.items()}
        if self.cp_layout is not None:
            moved["cp_layout"] = {k: _moved(v, device) for k, v in layout.items()}
        out = dataclasses.replace(self, **moved, aux=aux)
        out._row_gather  # noqa: B018 - built now, on `device`
        return out

    def with_aux(self, key: str, values: Tensor) -> Self:
        """Copy with ``aux[key] = values`` (shaped like ``input_ids``, e.g. log-probs computed
        on this very batch)."""
        if values.shape != self.input_ids.shape:
            raise ValueError(
                f"aux {key!r}: expected {tuple(self.input_ids.shape)}, got {values.shape}"
            )
        out = dataclasses.replace(self, aux={**self.aux, key: values})
        if "_row_gather" in vars(self):  # same sequences, same device
            vars(out)["_row_gather"] = self._row_gather
        return out

    def _flat(self, values: Tensor) -> Tensor:
        lead = self.input_ids.dim()
        if values.shape[:lead] != self.input_ids.shape:
            raise ValueError(f"expected {tuple(self.input_ids.shape)} + (...), got {values.shape}")
        return values.reshape(-1, *values.shape[lead:])

    def unpack(self, values: Tensor, fill: float = 0.0) -> list[Tensor]:
        """Per-position outputs -> token-aligned per-sequence tensors ``[n_i, ...]``.

        Element 0 is ``fill`` (nothing predicts the first token), element ``k`` the value at
        position ``k - 1`` (e.g. ``log p(x_k | x_<k)``). ``unpack(batch.aux[key])`` gives back
        the input ``aux[key]`` with element 0 set to ``fill``.
        """
        flat = self._flat(values)
        first = flat.new_full((1, *flat.shape[1:]), fill)
        return [
            torch.cat([first, flat[s : s + n - 1]])
            for s, n in zip(self.seq_starts, self.seq_lengths, strict=True)
        ]

    @functools.cached_property
    def _row_gather(self) -> tuple[Tensor, Tensor]:
        """(flat position, valid) of every ``[sequence, j]`` slot of :meth:`to_rows`, on the
        batch's device (host copies there would stall the device queue in every loss)."""
        starts = torch.tensor(self.seq_starts, dtype=torch.long)[:, None]
        lengths = torch.tensor(self.seq_lengths, dtype=torch.long)[:, None]
        offsets = torch.arange(max(self.seq_lengths, default=0))[None, :]
        index = starts + torch.minimum(offsets, lengths - 1)  # past its end: its last position
        device = self.input_ids.device
        return _moved(index, device), _moved(offsets < lengths, device)

    def to_rows(self, values: Tensor, fill: float = 0.0) -> Tensor:
        """Per-position values as ``[num_seqs, max_len, ...]`` (target-aligned, right-padded
        with ``fill``; keeps gradients): one row per sequence for per-sequence reductions."""
        flat = self._flat(values)
        index, valid = self._row_gather
        if index.device != flat.device:
            index, valid = index.to(flat.device), valid.to(flat.device)
        valid = valid.reshape(*valid.shape, *[1] * (flat.dim() - 1))
        return torch.where(valid, flat[index], fill)


def _on(tensor: Tensor, device: torch.device) -> bool:
    here = tensor.device
    return here.type == device.type and device.index in (None, here.index)


def _moved(tensor: Tensor, device: torch.device) -> Tensor:
    """``tensor`` on ``device``; from the host to a GPU through pinned memory, queued without
    waiting for the device (a pageable copy waits until the device has run all queued work)."""
    if _on(tensor, device):
        return tensor
    if device.type == "cuda" and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


@dataclass(frozen=True, kw_only=True)
class PaddedBatch(MicroBatch):
    """Right-padded ``[B, S]`` micro-batch; causal attention never sees the right padding, so
    no attention mask is needed."""


@dataclass(frozen=True, kw_only=True)
class PackedBatch(MicroBatch):
    """One packed row ``[1, T]`` (THD): sequences end to end, positions restart at 0.

    ``cu_seqlens_padded`` (int32) delimits each sequence's slot (its tokens, then its own
    padding if ``pad_sequences_to_multiple > 1``) and last the row padding as a dummy segment;
    ``cu_seqlens`` holds the real lengths (Transformer Engine's ``cu_seqlens_q``). They are
    equal without per-sequence padding.
    """

    cu_seqlens: Tensor
    cu_seqlens_padded: Tensor

    def packed_seq_kwargs(self) -> dict[str, object]:
        """Arguments of ``megatron.core.packed_seq_params.PackedSeqParams``, and for a
        context-parallel shard its layout (`model.cp_attention.packed_seq_params` takes both)."""
        cu, cu_pad, s = self.cu_seqlens, self.cu_seqlens_padded, self.max_seqlen
        kwargs = {
            "qkv_format": "thd",
            **{"cu_seqlens_q": cu, "cu_seqlens_kv": cu, "max_seqlen_q": s, "max_seqlen_kv": s},
            **{"cu_seqlens_q_padded": cu_pad, "cu_seqlens_kv_padded": cu_pad},
        }
        if self.cp_layout is not None:  # `model.cp_attention.packed_seq_params` takes it
            kwargs["cp_layout"] = self.cp_layout
        return kwargs


_Aux = Mapping[str, Sequence[Tensor | float]]


def _sequences(indices: Sequence[int], input_ids: Sequence[Tensor]) -> list[Tensor]:
    ids = [torch.as_tensor(input_ids[i]).reshape(-1).long() for i in indices]
    for i, x in zip(indices, ids, strict=True):
        if x.numel() < 1:
            raise ValueError(f"sequence {i} is empty")
    return ids


def _layout(
    indices: Sequence[int],
    ids: list[Tensor],
    offsets: list[int],
    flat_len: int,
    loss_masks: Sequence[Tensor] | None,
    aux: _Aux | None,
    pad_token_id: int,
) -> dict:
    """Flat target-aligned tensors with sequence ``k`` written at ``offsets[k]``."""
    aux = aux or {}
    input_ids = torch.full((flat_len,), pad_token_id, dtype=torch.long)
    labels = input_ids.clone()
    loss_mask = torch.zeros(flat_len)
    out_aux = {key: torch.zeros(flat_len) for key in aux}
    for i, x, s in zip(indices, ids, offsets, strict=True):
        n = len(x)
        input_ids[s : s + n] = x
        labels[s : s + n - 1] = x[1:]
        mask = torch.ones(n) if loss_masks is None else torch.as_tensor(loss_masks[i])
        targets = [("loss_mask", loss_mask, mask)]
        targets += [(key, out_aux[key], torch.as_tensor(v[i])) for key, v in aux.items()]
        for name, dest, values in targets:
            if values.dim() != 0 and values.shape != x.shape:  # 0-d: broadcast (advantages).
                raise ValueError(f"{name}[{i}] has shape {tuple(values.shape)}, expected ({n},)")
            dest[s : s + n - 1] = values.expand(n)[1:]
    return {
        "input_ids": input_ids,
        "labels": labels,
        "loss_mask": loss_mask,
        "aux": out_aux,
        "seq_lengths": [len(x) for x in ids],
        "sequence_indices": list(indices),
        "seq_starts": offsets,
    }


def _reshaped(fields: dict, shape: tuple[int, int]) -> dict:
    out = {k: v.view(shape) if isinstance(v, Tensor) else v for k, v in fields.items()}
    out["aux"] = {k: v.view(shape) for k, v in fields["aux"].items()}
    return out


def pack_bin(
    indices: Sequence[int],
    input_ids: Sequence[Tensor],
    loss_masks: Sequence[Tensor] | None = None,
    aux: _Aux | None = None,
    *,
    pad_to_multiple: int = 1,
    pad_sequences_to_multiple: int = 1,
    pad_token_id: int = 0,
) -> PackedBatch:
    """Pack the sequences ``indices`` (one bin) into a row ``[1, T]``.

    ``input_ids[i]``, ``loss_masks[i]`` (None = every token is a target) and ``aux[key][i]``
    (``[n_i]``, or a scalar broadcast over the sequence) are token-aligned. Each sequence is
    padded to a multiple of ``pad_sequences_to_multiple`` (2 x CP for context parallelism), the
    row to ``pad_to_multiple`` (e.g. TP with sequence parallelism; TP x CP x 2 with CP).
    Pipeline parallelism sends fixed-shape activations unless Megatron's
    ``variable_seq_lengths`` is on: then pass ``pad_to_multiple=max_tokens`` (equal rows).
    """
    ids = _sequences(indices, input_ids)
    slots = [round_up(len(x), pad_sequences_to_multiple) for x in ids]
    total = round_up(max(sum(slots), 1), pad_to_multiple)
    dummy = [total - sum(slots)] if total > sum(slots) else []  # Padding attends only to itself.
    offsets = list(accumulate(slots, initial=0))[:-1]
    fields = _layout(indices, ids, offsets, total, loss_masks, aux, pad_token_id)
    return PackedBatch(
        **_reshaped(fields, (1, total)),
        position_ids=torch.cat([torch.arange(n) for n in slots + dummy])[None],
        max_seqlen=max(slots + dummy),
        cu_seqlens=torch.tensor([*accumulate([len(x) for x in ids] + dummy, initial=0)]).int(),
        cu_seqlens_padded=torch.tensor([*accumulate(slots + dummy, initial=0)]).int(),
    )


def pad_batch(
    indices: Sequence[int],
    input_ids: Sequence[Tensor],
    loss_masks: Sequence[Tensor] | None = None,
    aux: _Aux | None = None,
    *,
    pad_to_multiple: int = 1,
    pad_token_id: int = 0,
) -> PaddedBatch:
    """Right-pad the sequences ``indices`` into ``[B, S]`` (``S`` = longest, rounded up to
    ``pad_to_multiple``) for ``enable_sequence_packing: false``. Inputs as :func:`pack_bin`;
    no sequences gives one all-padding row."""
    ids = _sequences(indices, input_ids)
    rows = max(len(ids), 1)
    width = round_up(max((len(x) for x in ids), default=1), pad_to_multiple)
    offsets = [k * width for k in range(len(ids))]
    fields = _layout(indices, ids, offsets, rows * width, loss_masks, aux, pad_token_id)
    return PaddedBatch(
        **_reshaped(fields, (rows, width)),
        position_ids=torch.arange(width).repeat(rows, 1),
        max_seqlen=width,
    )

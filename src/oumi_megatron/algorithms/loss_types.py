"""``grpo.loss_type``: the named losses users switch between, and what each one sets.

A loss type picks the per-token objective (``policy_loss``), the default aggregation
(``aggregation``) and, for DAPO, the default upper clip. ``loss_aggregation`` and
``epsilon_high`` set explicitly win, except for ``gspo``, whose sequence-level objective is a
mean over sequences by definition (use ``gspo_token`` to aggregate otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from oumi_megatron.algorithms.aggregation import AggregationMode
from oumi_megatron.algorithms.policy_loss import PolicyObjective

LossType = Literal["grpo", "dr_grpo", "dapo", "bnpo", "gspo", "gspo_token", "cispo", "sapo"]

# DAPO's upper clip range (Yu et al. 2025, arXiv:2503.14476).
DAPO_EPSILON_HIGH = 0.28


@dataclass(frozen=True)
class LossTypeSpec:
    objective: PolicyObjective
    aggregation: AggregationMode
    epsilon_high: float | None = None  # default upper clip; None: epsilon
    fixed_aggregation: bool = False


LOSS_TYPES: dict[str, LossTypeSpec] = {
    # GRPO paper (arXiv:2402.03300): per-sequence token mean, then mean over sequences.
    "grpo": LossTypeSpec("clip", "seq-mean-token-mean"),
    # Dr. GRPO (arXiv:2503.20783): token sums over a constant (S x max completion length).
    "dr_grpo": LossTypeSpec("clip", "seq-mean-token-sum-norm"),
    # DAPO: token-level mean over the whole batch, clip-higher.
    "dapo": LossTypeSpec("clip", "token-mean", epsilon_high=DAPO_EPSILON_HIGH),
    # TRL's bnpo: token-level mean (TRL over each process's micro-batch; here the global batch).
    "bnpo": LossTypeSpec("clip", "token-mean"),
    # GSPO (arXiv:2507.18071): sequence ratio; a mean over sequences by definition.
    "gspo": LossTypeSpec("gspo", "seq-mean-token-mean", fixed_aggregation=True),
    "gspo_token": LossTypeSpec("gspo", "seq-mean-token-mean"),
    # CISPO (arXiv:2506.13585): clipped, detached IS weight; token-level mean.
    "cispo": LossTypeSpec("cispo", "token-mean"),
    # SAPO (arXiv:2511.20347): soft gate; verl and TRL average per sequence.
    "sapo": LossTypeSpec("sapo", "seq-mean-token-mean"),
}
LOSS_TYPE_NAMES: tuple[str, ...] = tuple(LOSS_TYPES)


def resolve_aggregation(loss_type: str, explicit: AggregationMode | None) -> AggregationMode:
    """The aggregation mode of ``loss_type``, or ``explicit`` where it may be chosen."""
    spec = LOSS_TYPES[loss_type]
    if explicit is None:
        return spec.aggregation
    if spec.fixed_aggregation and explicit != spec.aggregation:
        raise ValueError(
            f"grpo.loss_aggregation '{explicit}' does not apply to grpo.loss_type "
            f"'{loss_type}', whose sequence-level objective is a mean over sequences "
            f"('{spec.aggregation}'). Fix: remove grpo.loss_aggregation, or use "
            f"loss_type: gspo_token (the token form) to aggregate otherwise."
        )
    return explicit


def resolve_epsilon_high(loss_type: str, epsilon: float, explicit: float | None) -> float:
    """The upper clip range: ``explicit``, else the loss type's default, else ``epsilon``."""
    if explicit is not None:
        return explicit
    default = LOSS_TYPES[loss_type].epsilon_high
    return epsilon if default is None else default

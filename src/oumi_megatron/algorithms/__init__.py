"""GRPO maths in pure torch: advantages, policy objectives, KL, rollout correction, aggregation."""

from oumi_megatron.algorithms.advantages import (
    AdvantageEstimator,
    GroupAdvantages,
    compute_group_advantages,
)
from oumi_megatron.algorithms.aggregation import (
    AGGREGATION_MODES,
    AggregationMode,
    LossNormalizer,
    aggregate_loss,
    batch_counts,
)
from oumi_megatron.algorithms.grpo import (
    GrpoLossConfig,
    combine_metrics,
    grpo_loss,
    metric_reduce_op,
)
from oumi_megatron.algorithms.kl import KL_ESTIMATORS, KLEstimator, kl_penalty
from oumi_megatron.algorithms.loss_types import LOSS_TYPES, LossType
from oumi_megatron.algorithms.policy_loss import (
    ObjectiveParams,
    PolicyTerms,
    policy_objective,
    token_mult_prob_error,
)
from oumi_megatron.algorithms.rollout_correction import RolloutCorrection, correction_weights

__all__ = [
    "AGGREGATION_MODES",
    "KL_ESTIMATORS",
    "LOSS_TYPES",
    "AdvantageEstimator",
    "AggregationMode",
    "GroupAdvantages",
    "GrpoLossConfig",
    "KLEstimator",
    "LossNormalizer",
    "LossType",
    "ObjectiveParams",
    "PolicyTerms",
    "RolloutCorrection",
    "aggregate_loss",
    "batch_counts",
    "combine_metrics",
    "compute_group_advantages",
    "correction_weights",
    "grpo_loss",
    "kl_penalty",
    "metric_reduce_op",
    "policy_objective",
    "token_mult_prob_error",
]

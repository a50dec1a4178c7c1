"""GRPO maths in pure torch: advantages, clipped surrogate, KL, TIS, loss aggregation."""

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
from oumi_megatron.algorithms.policy_loss import (
    SurrogateOutput,
    clipped_surrogate,
    token_mult_prob_error,
    truncated_is_weight,
)

__all__ = [
    "AGGREGATION_MODES",
    "KL_ESTIMATORS",
    "AdvantageEstimator",
    "AggregationMode",
    "GroupAdvantages",
    "GrpoLossConfig",
    "KLEstimator",
    "LossNormalizer",
    "SurrogateOutput",
    "aggregate_loss",
    "batch_counts",
    "clipped_surrogate",
    "combine_metrics",
    "compute_group_advantages",
    "grpo_loss",
    "kl_penalty",
    "metric_reduce_op",
    "token_mult_prob_error",
    "truncated_is_weight",
]

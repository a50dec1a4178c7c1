"""Oumi's registered GRPO datasets as prompt sources.

Oumi registers GRPO datasets by name (``openai/gsm8k``, ``d1shs0ap/countdown``,
``oumi-ai/oumi-letter-count``, ``trl-lib/tldr``, ...; also any a user registers with
``@register_dataset``). A ``dataset_name`` registered there as a GRPO dataset is read by Oumi's
own class, from the Hub or from ``dataset_path``, so the prompts are the ones Oumi's GRPO
trainers train on; ``dataset_kwargs`` (other than prompt options) go to the class.

Oumi's GRPO classes return rows in verl's format: ``prompt`` (chat messages),
``reward_model.ground_truth``, ``extra_info`` and ``data_source``. This trainer calls reward
functions with columns by name (TRL-style), so the ground truth is also given as columns: a
dict's keys (countdown: ``target``, ``numbers``), or ``answer`` for a single value (gsm8k). The
built-in ``gsm8k_accuracy`` and ``countdown`` rewards read exactly these.

Other registered datasets (SFT, pretraining, preference) are read from the Hub as plain rows,
as any Hub id is (``data/sources.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def registered_grpo_class(name: str, subset: str | None = None) -> type | None:
    """Oumi's GRPO dataset class registered as `name`, or None."""
    from oumi.core.registry import REGISTRY

    # The lookup imports Oumi's datasets in the order Oumi needs; importing its dataset base
    # classes first is circular (oumi 0.9).
    found = REGISTRY.get_dataset(name, subset=subset)
    from oumi.core.datasets import BaseExperimentalGrpoDataset

    is_grpo = isinstance(found, type) and issubclass(found, BaseExperimentalGrpoDataset)
    return found if is_grpo else None


def read_registered(cls: type, spec, extra: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every row of `spec`'s dataset through Oumi's class `cls` (its own transform), with the
    ground truth also as columns."""
    dataset = cls(
        dataset_name=spec.dataset_name,
        dataset_path=spec.dataset_path,
        split=spec.split,
        subset=spec.subset,
        **extra,
    )
    return [
        with_ground_truth_columns(dataset.transform(dataset.raw(i))) for i in range(len(dataset))
    ]


def with_ground_truth_columns(row: dict[str, Any]) -> dict[str, Any]:
    """`row` plus its ``reward_model.ground_truth`` as columns; existing columns win."""
    truth = (row.get("reward_model") or {}).get("ground_truth")
    if truth is None:
        return row
    columns = dict(truth) if isinstance(truth, Mapping) else {"answer": truth}
    return {**columns, "ground_truth": truth, **row}

"""`OumiMegatronGrpoTrainer`: the GRPO trainer as Oumi's `BaseTrainer`, for code that builds
trainers the Oumi way (``OumiMegatronGrpoTrainer(config).train()``, Oumi's trainer builders).
Kept apart from `trainer.py` because Oumi's trainers package costs ~4 s to import."""

from __future__ import annotations

from oumi.core.trainers.base_trainer import BaseTrainer

from oumi_megatron.trainer import MegatronGrpoTrainer


class OumiMegatronGrpoTrainer(MegatronGrpoTrainer, BaseTrainer):
    """`MegatronGrpoTrainer` under Oumi's `BaseTrainer` (its four methods come from there)."""

"""Python entry points as a notebook user calls them, in one process:

1. ``oumi.train(config)`` with a ``MegatronTrainingConfig`` loaded from the demo recipe;
2. ``OumiMegatronGrpoTrainer(config)`` built from Oumi's own dataclasses plus ``megatron``/
   ``grpo`` dicts; ``train()``, then ``save_model(other_config, final=False)``.

argv: model_dir recipe_run_dir built_run_dir other_output_dir overrides...
"""

from __future__ import annotations

import copy
import json
import sys

import oumi
from oumi.core.configs import (
    DataParams,
    DatasetParams,
    DatasetSplitParams,
    ModelParams,
    TrainerType,
    TrainingParams,
)

from oumi_megatron.config import MegatronTrainingConfig
from oumi_megatron.trainer import OumiMegatronGrpoTrainer

model_dir, recipe_run, built_run, other_dir, *overrides = sys.argv[1:]
RECIPE = "configs/recipes/tiny_grpo_cpu.yaml"

loaded = MegatronTrainingConfig.from_yaml_and_arg_list(
    RECIPE, [f"model.model_name={model_dir}", f"training.output_dir={recipe_run}", *overrides]
)
oumi.train(loaded)

built = MegatronTrainingConfig(
    model=ModelParams(model_name=model_dir),
    data=DataParams(
        train=DatasetSplitParams(
            datasets=[
                DatasetParams(
                    dataset_name="arithmetic_synthetic", dataset_kwargs={"num_examples": 2048}
                )
            ]
        )
    ),
    training=TrainingParams(
        trainer_type=TrainerType["MEGATRON_GRPO"],
        output_dir=built_run,
        max_steps=1,
        learning_rate=1e-3,
        save_steps=0,
        seed=42,
        enable_tensorboard=False,
    ),
    megatron={
        "micro_batch_size": 4,
        "global_batch_size": 16,
        "inference_backend": "torch",
        "transformer_config": {"params_dtype": "fp32"},
    },  # fmt: skip
    grpo={
        "num_generations": 4,
        "prompts_per_step": 4,
        "max_prompt_length": 64,  # the tiny model has 512 positions
        "max_completion_length": 6,
        "reward_functions": ["arithmetic_dense"],
    },  # fmt: skip
)
trainer = OumiMegatronGrpoTrainer(built)
trainer.train()
other = copy.deepcopy(built)
other.training.output_dir = other_dir
trainer.save_model(other, final=False)
print("LAST_METRICS " + json.dumps(trainer.get_last_eval_metrics()))

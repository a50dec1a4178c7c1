"""A parallel layout: how a world of ranks splits into TP, PP, VPP, CP, EP and DP."""

from __future__ import annotations

from dataclasses import dataclass

from oumi_megatron.parallel.pipeline_split import PipelineSplit


@dataclass(frozen=True)
class ParallelLayout:
    """Model-parallel sizes; data parallelism is whatever the world size leaves over."""

    tp: int = 1
    pp: int = 1
    vpp: int | None = None
    cp: int = 1
    ep: int = 1
    etp: int | None = None
    sequence_parallel: bool = False
    """Megatron's sequence parallelism (takes effect with TP > 1: `sp_size`)."""
    split: PipelineSplit = PipelineSplit()
    """How layers are split over pipeline stages (Megatron's uneven-pipeline settings)."""

    @property
    def sp_size(self) -> int:
        """Ranks a layer's activations are split over along the sequence: TP with sequence
        parallelism, else 1."""
        return self.tp if self.sequence_parallel else 1

    @property
    def model_parallel_size(self) -> int:
        return self.tp * self.pp * self.cp

    def data_parallel_size(self, world_size: int) -> int:
        """Megatron's data-parallel size: world / (TP x PP x CP) (the one definition)."""
        if world_size < 1:
            raise ValueError(f"world_size ({world_size}) must be >= 1.")
        if world_size % self.model_parallel_size:
            raise ValueError(
                f"world_size ({world_size}) must be divisible by the product of all model "
                f"parallel sizes ({self.model_parallel_size}): "
                f"tensor_model_parallel_size ({self.tp}) × "
                f"pipeline_model_parallel_size ({self.pp}) × "
                f"context_parallel_size ({self.cp}). Fix: launch a multiple of "
                f"{self.model_parallel_size} ranks, or lower the megatron.*_parallel_size values."
            )
        return world_size // self.model_parallel_size

    @classmethod
    def from_params(cls, params) -> ParallelLayout:
        """From a `MegatronParams` (or anything with Megatron's field names)."""
        transformer = params.transformer_config
        return cls(
            tp=params.tensor_model_parallel_size,
            pp=params.pipeline_model_parallel_size,
            vpp=params.virtual_pipeline_model_parallel_size,
            cp=params.context_parallel_size,
            ep=params.expert_model_parallel_size,
            etp=params.expert_tensor_parallel_size,
            sequence_parallel=params.sequence_parallel,
            split=PipelineSplit(
                first_stage_layers=transformer.num_layers_in_first_pipeline_stage,
                last_stage_layers=transformer.num_layers_in_last_pipeline_stage,
                embedding_in_split=transformer.account_for_embedding_in_pipeline_split,
                loss_in_split=transformer.account_for_loss_in_pipeline_split,
            ),
        )

    def __str__(self) -> str:
        parts = [f"TP{self.tp}" + ("+SP" if self.sp_size > 1 else ""), f"PP{self.pp}"]
        parts += [f"VPP{self.vpp}"] if self.vpp else []
        parts += [f"CP{self.cp}"] if self.cp > 1 else []
        parts += [f"EP{self.ep}"] if self.ep > 1 else []
        if not self.split.is_even:  # e.g. PP2×first1, PP16×emb+loss
            split = self.split
            uneven = [f"first{split.first_stage_layers}"] if split.first_stage_layers else []
            uneven += [f"last{split.last_stage_layers}"] if split.last_stage_layers else []
            uneven += ["emb"] if split.embedding_in_split else []
            uneven += ["loss"] if split.loss_in_split else []
            parts.append("+".join(uneven))
        return "×".join(parts)

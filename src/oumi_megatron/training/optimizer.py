"""Megatron's optimizer (Adam, optionally distributed / CPU-offloaded) and LR schedule."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class OptimizerSettings:
    """What the optimizer needs from the recipe (Oumi's training.* plus megatron.optimizer_config)."""

    learning_rate: float
    total_steps: int
    min_lr: float = 0.0
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    clip_grad: float = 1.0
    warmup_steps: int = 0
    decay_style: str = "constant"
    use_distributed_optimizer: bool = False
    cpu_offload: bool = False
    offload_fraction: float = 1.0
    overlap_cpu_offload: bool = False

    @classmethod
    def from_config(
        cls, cfg, optimizer_steps_per_step: int = 1, steps: int | None = None
    ) -> OptimizerSettings:
        """``steps``: GRPO steps the run trains (``training.max_steps`` when None)."""
        opt = cfg.megatron.optimizer_config
        steps = int(cfg.training.max_steps) if steps is None else steps
        total = max(steps, 1) * optimizer_steps_per_step
        warmup = opt.lr_warmup_steps
        if warmup is None:
            warmup = int(round((opt.lr_warmup_fraction or 0.0) * total))
        return cls(
            learning_rate=float(cfg.training.learning_rate),
            total_steps=total,
            min_lr=opt.min_lr,
            weight_decay=opt.weight_decay,
            adam_beta1=opt.adam_beta1,
            adam_beta2=opt.adam_beta2,
            adam_eps=opt.adam_eps,
            clip_grad=opt.clip_grad,
            warmup_steps=warmup,
            decay_style=opt.lr_decay_style,
            use_distributed_optimizer=cfg.megatron.ddp_config.use_distributed_optimizer,
            cpu_offload=opt.optimizer_cpu_offload,
            offload_fraction=opt.optimizer_offload_fraction,
            overlap_cpu_offload=opt.overlap_cpu_optimizer_d2h_h2d,
        )


def build_optimizer(model: list[torch.nn.Module], settings: OptimizerSettings, params_dtype):
    """`get_megatron_optimizer` + `OptimizerParamScheduler` for the (DDP-wrapped) chunks."""
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

    config = OptimizerConfig(
        optimizer="adam",
        lr=settings.learning_rate,
        min_lr=settings.min_lr,
        weight_decay=settings.weight_decay,
        adam_beta1=settings.adam_beta1,
        adam_beta2=settings.adam_beta2,
        adam_eps=settings.adam_eps,
        clip_grad=settings.clip_grad,
        bf16=params_dtype == torch.bfloat16,
        fp16=params_dtype == torch.float16,
        params_dtype=params_dtype,
        use_distributed_optimizer=settings.use_distributed_optimizer,
        optimizer_cpu_offload=settings.cpu_offload,
        optimizer_offload_fraction=settings.offload_fraction,
        overlap_cpu_optimizer_d2h_h2d=settings.overlap_cpu_offload,
    )
    from oumi_megatron.training.multi_tensor import install_foreach_multi_tensor_ops

    install_foreach_multi_tensor_ops()
    optimizer = get_megatron_optimizer(config, model)
    if not settings.cpu_offload:
        use_fused_adam(optimizer)
    scheduler = OptimizerParamScheduler(
        optimizer,
        init_lr=0.0 if settings.warmup_steps else settings.learning_rate,
        max_lr=settings.learning_rate,
        min_lr=settings.min_lr,
        lr_warmup_steps=settings.warmup_steps,
        lr_decay_steps=settings.total_steps,
        lr_decay_style=settings.decay_style,
        start_wd=settings.weight_decay,
        end_wd=settings.weight_decay,
        wd_incr_steps=settings.total_steps,
        wd_incr_style="constant",
    )
    return optimizer, scheduler


def use_fused_adam(optimizer) -> bool:
    """Switch Megatron's torch AdamW (its optimizer without Transformer Engine or Apex) to
    torch's fused single-kernel implementation where every parameter lives on a GPU.

    Torch's default on GPU, the multi-tensor ("foreach") AdamW, passes over the fp32 main
    parameters and both moments several times per step; the fused kernel reads and writes each
    once (torch.optim.AdamW's ``fused``). Same update up to fp32 rounding. Call before the first
    step; returns whether it switched (False on CPU, with TE/Apex's own fused Adam, or when
    another optimizer class is in use)."""
    inner = [
        getattr(o, "optimizer", None) for o in getattr(optimizer, "chained_optimizers", [optimizer])
    ]
    if not inner or not all(type(o) in (torch.optim.AdamW, torch.optim.Adam) for o in inner):
        return False
    groups = [g for o in inner for g in o.param_groups]
    params = [p for g in groups for p in g["params"]]
    if not params or not all(p.is_cuda and p.is_floating_point() for p in params):
        return False
    if any(o.state for o in inner):
        raise RuntimeError("use_fused_adam: call it before the optimizer's first step")
    for group in groups:
        group.update(fused=True, foreach=False)
    return True

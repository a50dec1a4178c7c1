"""The CLI's commands: each prepares (validates) first, then starts processes and models."""

from __future__ import annotations

import logging

import torch
import torch.distributed as dist

from oumi_megatron.launch import RunSetup, prepare_run, start_processes
from oumi_megatron.parallel.ranks import all_reduce_host, is_rank0

logger = logging.getLogger("oumi_megatron")


def _load(setup: RunSetup):
    from oumi_megatron.model.bridge import load_megatron_model

    start_processes(setup)
    return load_megatron_model(
        str(setup.hf_dir),
        setup.megatron_checkpoint_dir,
        setup.layout,
        params_dtype=setup.params_dtype,
        trust_remote_code=setup.cfg.model.trust_remote_code,
    )


def _rank0(message: str, *args) -> None:
    if is_rank0():
        logger.info(message, *args)


def train(args) -> int:
    from oumi_megatron.config import load_config
    from oumi_megatron.run import run_training

    cfg = load_config(args.config, args.overrides, check=False)  # all checks at once, next
    run_training(cfg, resume_from_checkpoint=args.resume)
    return 0


def convert(args) -> int:
    setup = prepare_run(args.config, args.overrides, for_training=False)
    loaded = _load(setup)
    action = "reused" if loaded.reused_checkpoint else "converted"
    _rank0(
        "%s %s in %.2f s (weights %.2f s)",
        action,
        setup.megatron_checkpoint_dir,
        loaded.seconds,
        loaded.weights_seconds,
    )
    return 0


def export(args) -> int:
    """``output_dir/hf_model`` from the converted start, or, with ``--checkpoint step_N|latest|
    PATH``, ``output_dir/hf_model_step_N`` from that training checkpoint (``--output`` DIR)."""
    from oumi_megatron.model.bridge import export_hf_model

    setup = prepare_run(args.config, args.overrides, for_training=False)
    target, checkpoint_path = setup.hf_export_dir, None
    if args.checkpoint:
        checkpoint_path, step = _training_checkpoint(setup, args.checkpoint)
        target = setup.output_dir / f"hf_model_step_{step}"
    loaded = _load(setup)
    if checkpoint_path is not None:
        from oumi_megatron.model.dist_ckpt import load_chunks

        load_chunks(loaded.chunks, checkpoint_path / "dist")
        _rank0("loaded the policy of %s", checkpoint_path)
    path = export_hf_model(loaded, args.output or target)
    _rank0("exported %s", path)
    return 0


def _training_checkpoint(setup: RunSetup, name: str):
    """(path, step) of checkpoint ``name`` under output_dir/checkpoints; ``ConfigError`` if none."""
    import json

    from oumi_megatron.config import ConfigError
    from oumi_megatron.training import checkpoint

    root = setup.output_dir / "checkpoints"
    try:
        path = checkpoint.resolve_resume_path(root, name)
    except FileNotFoundError as error:
        raise ConfigError(f"--checkpoint: {error}") from None
    if path is None:
        raise ConfigError(
            f"--checkpoint {name}: no complete checkpoint under {root}. Fix: train with "
            f"training.save_steps > 0 first, or export the converted start without --checkpoint."
        )
    step = json.loads((path / checkpoint.TRAINER_STATE).read_text())["step"]
    return path, int(step)


def verify(args) -> int:
    """Compare logits with Hugging Face on the last pipeline stage; non-zero exit on mismatch."""
    from oumi_megatron.model.bridge import export_hf_model
    from oumi_megatron.model.forward import forward_logits

    setup = prepare_run(args.config, args.overrides, for_training=False)
    loaded = _load(setup)
    vocab = loaded.provider.vocab_size
    generator = torch.Generator().manual_seed(setup.cfg.training.seed)
    input_ids = torch.randint(0, vocab, (4, 32), generator=generator)
    logits = forward_logits(
        loaded.chunks, input_ids, micro_batch_size=setup.cfg.megatron.micro_batch_size
    )
    worst = torch.zeros(1, dtype=torch.float64)
    if logits is not None:
        reference = _hf_logits(setup, input_ids)
        worst[0] = (logits[..., :vocab] - reference[..., :vocab]).abs().max().item()
    all_reduce_host(worst, op=dist.ReduceOp.MAX)
    ok = worst.item() <= args.tolerance
    _rank0(
        "HF vs Megatron logits at %s on %d ranks: max |Δ| = %.3g (%s, tolerance %.0e)",
        setup.layout,
        setup.world_size,
        worst.item(),
        "OK" if ok else "MISMATCH",
        args.tolerance,
    )
    if args.export:
        _rank0("exported %s", export_hf_model(loaded, setup.hf_export_dir))
    return 0 if ok else 1


def _hf_logits(setup: RunSetup, input_ids: torch.Tensor) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    from oumi_megatron.rollout.hf_attention import hf_config_and_attention

    remote_code = setup.cfg.model.trust_remote_code
    config, attention = hf_config_and_attention(setup.hf_dir, trust_remote_code=remote_code)
    model = AutoModelForCausalLM.from_pretrained(
        setup.hf_dir, config=config, dtype=setup.params_dtype, trust_remote_code=remote_code,
        attn_implementation=attention,
    ).eval()  # fmt: skip
    with torch.no_grad():
        return model(input_ids).logits.float()

"""`MegatronGrpoTrainer`: GRPO on Megatron-Core (Oumi's `BaseTrainer` form of it:
`OumiMegatronGrpoTrainer`, importable from here too).

One step reads like the algorithm: rollout → reward → advantages → exchange → update → weight
sync → log → checkpoint. Each phase lives in its own module under `step/` and `training/`.
Every rollout replica generates and scores its own prompts; each rank then receives only the
sequences its data-parallel rank trains on (`step/topology.py` says who does what).

Oumi's `BaseTrainer` lives in a package that imports every Oumi trainer (and wandb): ~4 s per
process. Runs started by `oumi_megatron train` / `oumi train` use this class and skip that
import; `OumiMegatronGrpoTrainer` (`oumi_trainer.py`) is loaded only when asked for.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch

from oumi_megatron.algorithms.overlong import is_truncated
from oumi_megatron.faults import fault_point
from oumi_megatron.heap import freeze_long_lived
from oumi_megatron.launch import RunSetup, start_processes
from oumi_megatron.metrics import MetricsLogger, PhaseTimer, TrainingProgress
from oumi_megatron.metrics.completions import append_completions
from oumi_megatron.metrics.sinks import truncate_history
from oumi_megatron.metrics.summary import LayoutFacts, layout_lines, run_lines
from oumi_megatron.metrics.timers import STANDARD_PHASES
from oumi_megatron.model.provider import needs_equal_microbatch_shapes
from oumi_megatron.parallel.preemption import PreemptionWatch, exit_during_startup
from oumi_megatron.parallel.ranks import all_reduce_host, barrier, is_rank0, rank
from oumi_megatron.rollout.base import SamplingParams
from oumi_megatron.step import async_rollout, components, dynamic_sampling
from oumi_megatron.step.exchange import route_sequences
from oumi_megatron.step.length import training_steps
from oumi_megatron.step.metrics import reduce_tally, rollout_tally, step_metrics
from oumi_megatron.step.reward import ScoredBatch, score_and_advantages
from oumi_megatron.step.reward_guard import RewardFailureGuard
from oumi_megatron.step.rollout import RolloutBatch, submit_share
from oumi_megatron.step.sync import build_weight_sync
from oumi_megatron.step.update import (
    UpdateSettings,
    kl_reward_settings,
    loss_config,
    optimizer_steps_per_grpo_step,
    run_update,
)
from oumi_megatron.stops import FailurePolicyStop, Preempted, RunStopped
from oumi_megatron.training import checkpoint
from oumi_megatron.training.metric_reduce import all_reduce_metrics
from oumi_megatron.training.step_batches import BatchingSettings

logger = logging.getLogger(__name__)


class MegatronGrpoTrainer:
    """GRPO with the policy on Megatron-Core (TP/PP/VPP/EP/DP) and rollout replicas; implements
    Oumi's `BaseTrainer` methods (`train`, `save_state`, `save_model`, `get_last_eval_metrics`)."""

    def __init__(self, config, *, setup: RunSetup | None = None):
        """Validates ``config`` (a ``MegatronTrainingConfig``, or an Oumi ``TrainingConfig``
        with default ``megatron:``/``grpo:``) for this process's world, starts the process
        groups and builds the policy, reference, rollout engine, prompts and rewards.

        ``setup``: the already validated run (``launch.prepare_setup``), to skip validation.

        Raises:
            ConfigError: for bad input, before any model is built.
        """
        # Until train()'s PreemptionWatch (the process group may not exist yet: torchrun's RANK).
        exit_during_startup(announce=os.environ.get("RANK", "0") == "0")
        if setup is None:
            setup = _prepare(config)
        start_processes(setup)
        self.setup, self.cfg = setup, setup.cfg
        self.rank, self.is_main = rank(), is_rank0()
        grpo, megatron = self.cfg.grpo, self.cfg.megatron
        self.tokenizer, self.loader = components.build_prompts(
            setup, setup.validated.prompts_per_step
        )
        self.max_steps = self._training_steps()
        self.loaded, self.policy = components.build_policy(setup, self.max_steps)
        self.reference = components.build_reference(setup)
        self.topology = components.build_topology(setup)
        self.engine = components.build_engine(setup, self.topology)
        self.generates = components.generates(setup, self.topology)
        self.is_leader = self.topology.is_leader(self.rank)
        self.weight_sync = build_weight_sync(
            megatron.weight_sync_method,
            lambda: self.policy.export_weights(self.loaded.bridge),
            self.engine,
            enabled=megatron.enable_weight_sync,
            is_writer=self.is_main,
            bucket_bytes=megatron.weight_sync_bucket_size_mb << 20,
            directory=setup.output_dir / "weight_sync",
            index_export=self._index_export(),
        )
        self.reward_functions = components.build_rewards(setup)
        self.reward_guard = RewardFailureGuard(
            [f.name for f in self.reward_functions],
            grpo.reward_failure_stop_frac,
            grpo.reward_failure_window,
        )
        self.evaluator = components.build_evaluator(setup, self.tokenizer, self.reward_functions)
        self.sampling = SamplingParams(
            n=grpo.num_generations,
            temperature=grpo.temperature,
            top_p=grpo.top_p,
            top_k=grpo.top_k or -1,
            max_new_tokens=grpo.max_completion_length,
            seed=self.cfg.sampling_seed,
        )
        self.update_settings = UpdateSettings(
            loss=loss_config(grpo),
            batching=BatchingSettings(
                micro_batch_size=megatron.micro_batch_size,
                dp_size=1,  # a rank holds its data-parallel rank's sequences only
                dp_rank=0,
                packing=megatron.enable_sequence_packing,
                token_budget=self.cfg.packing_token_budget,
                microbatch_multiple=setup.layout.pp if setup.layout.vpp else 1,
                pad_token_id=self.tokenizer.pad_token_id or 0,
                fixed_shape=needs_equal_microbatch_shapes(setup.layout),
                cp_size=setup.layout.cp,
                sp_size=setup.layout.sp_size,
            ),
            loss_scale_factor=grpo.loss_scale_factor or grpo.max_completion_length,
            optimizer_steps=optimizer_steps_per_grpo_step(self.cfg, setup.validated),
            dp_size=self.topology.dp_size,
            kl_reward=kl_reward_settings(grpo, self.topology.num_sequences),
        )
        self.timer = PhaseTimer(phases=STANDARD_PHASES + (("eval",) if self.evaluator else ()))
        self.checkpoint_root = setup.output_dir / "checkpoints"
        checkpoint_config = megatron.checkpoint_config
        self.checkpointer = checkpoint.Checkpointer(
            self.checkpoint_root,
            keep_last=checkpoint_config.keep_last,
            fully_parallel=checkpoint_config.use_fully_parallel_strategy,
            use_async=checkpoint_config.use_async_checkpoint,
        )
        self.step = 0
        self._in_flight: async_rollout.InFlight | None = None  # grpo.max_off_policy_steps
        self._last_metrics: dict[str, float] = {}
        self._history: list[dict[str, float]] = []  # this process's steps, for the summary
        if self.is_main:
            for line in layout_lines(self._layout_facts()):
                logger.info(line)

    def _layout_facts(self) -> LayoutFacts:
        cfg, setup, settings = self.cfg, self.setup, self.update_settings
        m = cfg.megatron
        packing = (f"packed, <= {cfg.packing_token_budget} tokens per micro batch"
                   if m.enable_sequence_packing else "padded rows")  # fmt: skip
        return LayoutFacts(
            world_size=setup.world_size,
            layout=str(setup.layout),
            data_parallel_size=setup.validated.data_parallel_size,
            device="GPU" if torch.cuda.is_available() else "CPU",
            parameters_rank0=sum(p.numel() for c in self.loaded.chunks for p in c.parameters()),
            rollout=self.topology.describe(),
            engine=m.inference_backend,
            weight_sync=m.weight_sync_method if m.enable_weight_sync else "off",
            prompts_per_step=setup.validated.prompts_per_step,
            num_generations=cfg.grpo.num_generations,
            global_batch_size=setup.validated.global_batch_size,
            micro_batch_size=m.micro_batch_size,
            microbatches_per_rank=setup.validated.num_microbatches,
            optimizer_steps_per_step=settings.optimizer_steps,
            packing=packing,
            steps=self.max_steps,
            steps_from="training.max_steps" if cfg.training.max_steps > 0
            else f"{cfg.training.num_train_epochs} epoch(s) of {len(self.loader.dataset)} prompts",
        )  # fmt: skip

    def _training_steps(self) -> int:
        """training.max_steps, or whole epochs when it is <= 0 (the start-up lines say which)."""
        training = self.cfg.training
        prompts, per_step = len(self.loader.dataset), self.loader.prompts_per_step
        return training_steps(training.max_steps, training.num_train_epochs, prompts, per_step)

    def _check_rewards(self, scored) -> None:
        """Stop (exit code 3) when a reward function fails too often or the completions come
        back empty (`step/reward_guard.py`); the step's metrics are logged first."""
        try:
            failed = scored.result.failed if scored.result is not None else []
            self.reward_guard.check(self.step, self._last_metrics, failed)
            self.reward_guard.check_rollout(self.step, self._last_metrics)
        except FailurePolicyStop:
            self.metrics_logger.log(self.step, self._last_metrics)
            raise

    def _index_export(self):
        """The export's element map for direct weight copies, where the export moves no data
        between ranks (a model-parallel group of one rank, experts unsharded)."""
        layout = self.setup.layout
        if layout.model_parallel_size != 1 or layout.ep != 1:
            return None
        return lambda: self.policy.index_export(self.loaded.bridge)

    # ---- the loop ------------------------------------------------------------------------

    def train(self, resume_from_checkpoint: str | None = None) -> None:
        started = time.perf_counter()
        self._resume(resume_from_checkpoint)
        self.metrics_logger = self._open_metrics()
        max_steps = self.max_steps
        progress = TrainingProgress(max_steps, initial_step=self.step, is_main_process=self.is_main)
        # Held to the end: a signal in the last step or the export lets the run finish.
        self.preemption = PreemptionWatch(announce=self.is_main)
        try:
            self._train_steps(max_steps, progress)
            self._finish(started)
        finally:
            self.preemption.close()

    def _train_steps(self, max_steps: int, progress: TrainingProgress) -> None:
        try:
            start = self.step
            while self.step < max_steps:
                self._train_step(max_steps, progress)
                if self.step == start + 1:  # what lives all run exists now (`heap.py`)
                    freeze_long_lived()
        except RunStopped:
            progress.close()
            self._close_after_stop()
            raise
        progress.close()

    def _finish(self, started: float) -> None:
        """Stop the rollout processes, complete an async save, export, summarise."""
        self.weight_sync.close()  # stops rollout processes, if any
        self.checkpointer.close()  # waits for a save still being written (async)
        if self.cfg.training.save_final_model:
            self.save_model(self.cfg, final=True)
        self.metrics_logger.close()
        if self.is_main:
            self._plot_rewards()
            out = self.output_dir
            outputs = [out / "hf_model", out / "checkpoints", out / "metrics.jsonl",
                       out / "reward_curve.png"]  # fmt: skip
            for line in run_lines(self._history, time.perf_counter() - started, outputs):
                logger.info(line)

    def _train_step(self, max_steps: int, progress: TrainingProgress) -> None:
        """One GRPO step: rollout, reward, update, sync; metrics, checkpoint, stop checks."""
        self.timer.start_step()
        fault_point("rollout", self.step + 1)
        generated, (rollouts, scored), sampling = self._generate()
        with self.timer.phase("release"):  # the engine's accelerator memory, for the update
            self.weight_sync.release()
        with self.timer.phase("exchange"):
            sequences, exchanged = route_sequences(
                self.topology,
                self.rank,
                rollouts,
                scored.advantages,
                self._trained(rollouts),
                scored.rewards,
            )
        self._submit_next(max_steps)  # async GRPO: the next step generates during the update
        with self.timer.phase("update"):
            fault_point("update", self.step + 1)
            update = run_update(self.policy, self.reference, sequences, self.update_settings)
        if self._in_flight is not None:
            with self.timer.phase("rollout_wait"):  # the engines must be idle for the sync
                self._in_flight.result()
        with self.timer.phase("sync"):
            update.update(self.weight_sync.sync())
        self.step += 1
        evaluation = self._evaluate_if_due(max_steps)
        tally = {**self._tally(*generated), **exchanged.as_tally()}
        self._last_metrics = step_metrics(
            reduce_tally(tally, self.cfg.grpo.num_generations),
            update,
            self.timer.step_metrics(),
            self.loaded.provider,
        )
        self._last_metrics.update(evaluation)
        self._last_metrics.update(sampling)
        self._check_rewards(generated[1])
        logging_step = self._is_logging_step(max_steps)
        if logging_step:  # before the save: a checkpoint's steps have their completions on disk
            self._log_completions(rollouts, scored)
        self._save_if_due()
        self._history.append({k: v for k, v in self._last_metrics.items()
                              if k.startswith("time/") or k == "reward/mean"})  # fmt: skip
        if logging_step:
            self.metrics_logger.log(self.step, self._last_metrics)
            progress.update(self.step, self._last_metrics)
        if self.step < max_steps and self._stop_requested():
            self._stop_for_preemption()

    def _trained(self, rollouts: RolloutBatch) -> list[bool] | None:
        """grpo.overlong_filtering: completions cut at the length limit leave the loss."""
        if not self.cfg.grpo.overlong_filtering:
            return None
        return [not is_truncated(reason) for reason in rollouts.finish_reasons]

    def _stop_requested(self) -> bool:
        """Whether any rank got a stop signal during this step, its save included (one
        all-reduce of a scalar per step, so every rank decides the same)."""
        local = {"stop": float(self.preemption.requested is not None)}
        return all_reduce_metrics(local, {"stop": "max"})["stop"] > 0

    def _stop_for_preemption(self) -> None:
        """Every rank saw the request with this step's metrics: checkpoint it, then stop."""
        signal_name = self.preemption.requested or "a signal on another rank"
        if int(self.cfg.training.save_steps or 0) <= 0 or self.step % self.cfg.training.save_steps:
            self.save_state()  # (a due save was made by _save_if_due already)
        self.checkpointer.finalize(blocking=True)  # `latest` names this step
        waited = self.preemption.seconds_since_request()
        after = f" ({waited:.1f} s after the signal)" if waited is not None else ""
        raise Preempted(
            f"preempted by {signal_name} after step {self.step}{after}: saved "
            f"{self.checkpoint_root / f'step_{self.step}'}; continue with --resume latest"
        )

    def _close_after_stop(self) -> None:
        """A deliberate stop: rollout processes stopped, saves finished, metrics flushed; no
        HF export (the run is not finished)."""
        self.weight_sync.close()
        self.checkpointer.close()
        self.metrics_logger.close()

    def _evaluate_if_due(self, max_steps: int) -> dict[str, float]:
        if self.evaluator is None or not self.evaluator.is_due(self.step, max_steps):
            return {}
        with self.timer.phase("eval"):
            return self.evaluator.run(
                self.engine, self.topology, self.rank, self.generates, self.is_leader
            )

    def _plot_rewards(self) -> None:
        from oumi_megatron.plotting import plot_reward_curve

        metrics = self.setup.output_dir / "metrics.jsonl"
        if metrics.exists():
            curve = plot_reward_curve(metrics, metrics.with_name("reward_curve.png"))
            logger.info("reward curve: %s", curve)

    def _open_metrics(self) -> MetricsLogger:
        training = self.cfg.training
        # A resumed run drops what was logged after its checkpoint (steps it trains again). The
        # checkpoint's own metrics row is logged again from the checkpoint; its completions were
        # written before it was saved.
        history = {"metrics.jsonl": self.step, "completions.jsonl": self.step + 1}
        for name, before_step in history.items():
            path = self.setup.output_dir / name
            if self.is_main and path.exists():
                truncate_history(path, before_step=before_step)
        sink = MetricsLogger(
            self.setup.output_dir,
            run_name=training.run_name or "oumi-megatron-grpo",
            enable_tensorboard=training.enable_tensorboard,
            enable_wandb=training.enable_wandb,
            logging_dir=training.logging_dir,
            is_main_process=self.is_main,
        )
        if self.step > 0 and self._last_metrics:
            sink.log(self.step, self._last_metrics)  # the checkpointed step's own row
        return sink

    def _generate(self):
        """Rollout and reward: ``(every completion, the batch to train on, metrics)``, each
        completion batch with its scores. With grpo.dynamic_sampling, rounds of generation
        until enough prompt groups vary (`step/dynamic_sampling.py`)."""
        grpo = self.cfg.grpo
        if self._in_flight is not None:  # generated during the previous step's update
            flight, self._in_flight = self._in_flight, None
            rollouts = flight.result()
            with self.timer.phase("reward"):
                scored = self._score(rollouts)
            stale = async_rollout.staleness_metrics(self.step, flight.version)
            return (rollouts, scored), (rollouts, scored), stale
        rounds, flags = [], []
        while True:
            with self.timer.phase("rollout"):
                rollouts = self._rollout(seed_offset=len(rounds) * self.loader.prompts_per_step)
            with self.timer.phase("reward"):
                scored = self._score(rollouts)
            rounds.append(dynamic_sampling.Round(rollouts, scored))
            if not grpo.dynamic_sampling:
                on_policy = async_rollout.staleness_metrics(self.step, self.step)
                extra = on_policy if grpo.max_off_policy_steps else {}
                return (rollouts, scored), (rollouts, scored), extra
            flags.append(self._varying_groups(rollouts, scored))
            needed = self.loader.prompts_per_step
            if (
                dynamic_sampling.enough(flags, needed)
                or len(rounds) == grpo.dynamic_sampling_max_rounds
            ):
                break
        selection, filled = dynamic_sampling.select_groups(flags, needed)
        if filled and self.is_main:
            logger.warning("dynamic sampling: %d of %d prompt groups still had equal rewards after "
                           "%d rounds; they fill the batch (raise grpo.dynamic_sampling_max_rounds)",
                           filled, needed, len(rounds))  # fmt: skip
        trained = dynamic_sampling.assemble(rounds, selection, grpo.num_generations)
        return dynamic_sampling.merge(rounds), trained, dynamic_sampling.metrics(flags, filled)

    def _submit_next(self, max_steps: int) -> None:
        """grpo.max_off_policy_steps: start the next step's rollout with the engines' current
        weights (`step/async_rollout.py`)."""
        if not self.cfg.grpo.max_off_policy_steps or self.step + 1 >= max_steps:
            return
        wait = self._start_rollout(step=self.step + 1)
        self._in_flight = async_rollout.InFlight(version=self.step, wait=wait)

    def _varying_groups(self, rollouts: RolloutBatch, scored: ScoredBatch) -> list[bool]:
        """Per prompt of the round: do its group's rewards differ (one all-reduce)."""
        flags = dynamic_sampling.local_variation(
            rollouts, scored, self.loader.prompts_per_step, self.cfg.grpo.num_generations
        )
        return [v > 0 for v in all_reduce_host(flags).tolist()]

    def _rollout(self, seed_offset: int = 0) -> RolloutBatch:
        """This replica's share of this step's prompts (an empty batch on other ranks)."""
        return self._start_rollout(self.step, seed_offset)()

    def _start_rollout(self, step: int, seed_offset: int = 0) -> Callable[[], RolloutBatch]:
        """Start this replica's share of the loader's next prompts (every rank advances the
        loader) for 0-based ``step``; returns the function that waits for the batch (empty off
        the replica leader)."""
        prompts = next(self.loader).prompts
        if not self.generates:
            return RolloutBatch
        replica = self.topology.replica_of(self.rank)
        wait = submit_share(self.engine, self.tokenizer, prompts,
                            self.topology.prompts_of_replica(replica), self.sampling, step,
                            seed_offset)  # fmt: skip
        # Every rank of a vLLM replica generates (in submit); the leader scores and sends them.
        return wait if self.is_leader else RolloutBatch

    def _score(self, rollouts: RolloutBatch) -> ScoredBatch:
        return score_and_advantages(
            rollouts, self.reward_functions, self.cfg.grpo.reward_weights, self.cfg.grpo
        )

    def _tally(self, rollouts: RolloutBatch, scored: ScoredBatch) -> dict:
        grpo = self.cfg.grpo
        names = [f.name for f in self.reward_functions]
        tally = rollout_tally(rollouts, scored, names, grpo.accuracy_reward or names[0],
                              overlong_buffer=grpo.overlong_buffer is not None)  # fmt: skip
        share = float(len(rollouts) // grpo.num_generations)
        leader = self.is_leader
        tally["rollout/replicas"] = ("sum", 1.0 if leader else 0.0)
        tally["rollout/prompts_per_replica_min"] = ("min", share if leader else float("inf"))
        tally["rollout/prompts_per_replica_max"] = ("max", share if leader else float("-inf"))
        return tally

    def _is_logging_step(self, max_steps: int) -> bool:
        every = max(int(self.cfg.training.logging_steps or 1), 1)
        return self.step % every == 0 or self.step == max_steps

    def _log_completions(self, rollouts: RolloutBatch, scored: ScoredBatch) -> None:
        if self.cfg.grpo.log_completions:  # every completion of the step, gathered on rank 0
            path = self.setup.output_dir / "completions.jsonl"
            append_completions(path, self.step, rollouts, scored, self.is_main)

    # ---- checkpoints -----------------------------------------------------------------------

    def _trainer_state(self) -> dict:
        state = {
            "loader": self.loader.state_dict(),
            "last_metrics": self._last_metrics,
            "layout": checkpoint.layout_record(self.setup),
        }
        if self._in_flight is not None:  # the next step's batch (finished: waited before sync)
            state["in_flight"] = self._in_flight.state_dict()
        return state

    def _save_if_due(self) -> None:
        """Checkpoint every `save_steps`; the checkpoint holds this step's metrics row (so a
        resumed run's metrics.jsonl is the uninterrupted one's). `time/checkpoint` is the time
        training was blocked: the whole save, or with async saves the hand-off to the writer
        plus publishing a background save that has finished."""
        save_steps = int(self.cfg.training.save_steps or 0)
        self._last_metrics["time/checkpoint"] = 0.0
        start = time.perf_counter()
        self.checkpointer.finalize(blocking=False)
        if save_steps > 0 and self.step % save_steps == 0:
            self.save_state()
        self._last_metrics["time/checkpoint"] = time.perf_counter() - start
        self._last_metrics["time/step"] += self._last_metrics["time/checkpoint"]

    def save_state(self) -> None:
        self.checkpointer.save(
            self.step,
            self.policy.model,
            self.policy.optimizer,
            self.policy.scheduler,
            self._trainer_state(),
        )

    def _resume(self, resume_from_checkpoint: str | None) -> None:
        resume = checkpoint.requested_resume(resume_from_checkpoint, self.cfg.training)
        self.checkpointer.finalize(blocking=True)  # `latest` must name the newest save
        path = checkpoint.resolve_resume_path(self.checkpoint_root, resume)
        self._claim_output_dir(fresh=path is None)
        if path is None:
            if resume == checkpoint.LATEST and self.is_main:
                logger.info("resume 'latest': no checkpoint in %s yet, starting fresh (step 0)",
                            self.checkpoint_root)  # fmt: skip
            return
        state = checkpoint.load_checkpoint(
            path, self.policy.model, self.policy.optimizer, self.policy.scheduler
        )
        if self.is_main:
            moved = checkpoint.set_aside_later(self.checkpoint_root, path)
            if moved:
                logger.warning(
                    "resuming from %s: the later checkpoints (%s) were set aside in %s; latest "
                    "and pruning no longer see them (delete them when not needed)", path.name,
                    ", ".join(p.name for p in moved), moved[0].parent,
                )  # fmt: skip
        barrier()
        self.loader.load_state_dict(state["loader"])
        if "in_flight" in state:
            self._in_flight = async_rollout.InFlight.from_state_dict(
                state["in_flight"], holds=self.is_leader
            )
        self._last_metrics = state.get("last_metrics", {})
        self.step = int(state["step"])
        self.weight_sync.sync()  # the engines started from the HF weights

    def _claim_output_dir(self, fresh: bool) -> None:
        """`run_dir.claim` on rank 0 (an old run's results go first with overwrite_output_dir;
        the checks that refuse a used directory ran before any work, in run.check_run_start)."""
        from oumi_megatron.run_dir import claim

        if self.is_main:
            text = json.dumps(dict(iter(self.cfg)), default=str, sort_keys=True)
            claim(self.output_dir, text, fresh, self.cfg.megatron.overwrite_output_dir)
        barrier()

    # ---- Oumi's BaseTrainer ----------------------------------------------------------------

    def save_model(self, config=None, final: bool = True) -> None:
        """Exports the policy as a Hugging Face model (safetensors and tokenizer) under
        ``config.training.output_dir`` (this run's when ``config`` is None): ``hf_model/``
        when ``final``, else ``hf_model_step_<N>/`` (N = steps trained so far)."""
        from oumi_megatron.model.bridge import export_hf_model

        root = Path(config.training.output_dir) if config is not None else self.output_dir
        path = export_hf_model(
            self.loaded, root / ("hf_model" if final else f"hf_model_step_{self.step}")
        )
        if self.is_main:
            if self.cfg.model.chat_template:  # the template the policy was trained with
                self.tokenizer.save_pretrained(path)
            logger.info("exported %s", path)

    def get_last_eval_metrics(self) -> dict[str, float]:
        return dict(self._last_metrics)

    @property
    def output_dir(self) -> Path:
        return self.setup.output_dir


def _prepare(config) -> RunSetup:
    from oumi_megatron.config import ConfigError
    from oumi_megatron.run import prepare_training

    setup = prepare_training(config)
    if setup.roles.is_rollout_worker:
        raise ConfigError(
            f"rank {setup.roles.rank} is a rollout-node process (megatron.rollout_nodes), not a "
            "trainer. Fix: start every process with oumi_megatron.run.run_training(config)."
        )
    return setup


def __getattr__(name: str):
    """`OumiMegatronGrpoTrainer` on first use (it imports Oumi's trainers package)."""
    if name == "OumiMegatronGrpoTrainer":
        from oumi_megatron.oumi_trainer import OumiMegatronGrpoTrainer

        return OumiMegatronGrpoTrainer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

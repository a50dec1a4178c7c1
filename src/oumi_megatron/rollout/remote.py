"""Rollout engines in their own processes, fed new weights over a gloo/NCCL broadcast group.

The trainer's global rank 0 starts ``len(specs)`` rollout processes (``spawn``), each building
its engine from an :class:`EngineSpec`. Commands (generate, sleep, wake_up, receive weights)
travel over a pipe per process; weights travel over a standalone broadcast group (TCPStore
rendezvous, trainer = group rank 0) with the bucket protocol of
:mod:`oumi_megatron.rollout.transports.broadcast`. Prompts are split into contiguous chunks,
one per process, and the samples are put back in prompt order.

A rollout process dies with the trainer (PDEATHSIG); one that dies on its own makes the next
call raise with its exit code and last error.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

import torch

from oumi_megatron.heap import freeze_long_lived
from oumi_megatron.processes import die_with_parent, free_port
from oumi_megatron.rollout.base import (
    RolloutEngine,
    RolloutSample,
    SamplingParams,
    merge_chunks,
    split_prompts,
)
from oumi_megatron.rollout.factory import EngineSpec, build_engine
from oumi_megatron.rollout.transports import SyncStats, WeightSender
from oumi_megatron.rollout.weight_sync import (
    StoreRendezvous,
    make_weight_receiver,
    make_weight_sender,
)

# What torchrun sets for its workers (besides TORCHELASTIC_*): a rollout process is not part of
# the trainer's world.
_LAUNCHER_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK",
                  "GROUP_WORLD_SIZE", "ROLE_RANK", "ROLE_NAME", "ROLE_WORLD_SIZE", "MASTER_ADDR",
                  "MASTER_PORT")  # fmt: skip


def leave_launcher_world() -> None:
    """Drop torchrun's worker variables from this process's environment.

    Not cosmetic: with ``TORCHELASTIC_USE_AGENT_STORE=True`` inherited, a ``tcp://``
    ``init_process_group`` (vLLM starts its own one-process world that way) only connects to a
    store it expects torchrun's agent to host, and waits for it until its timeout.
    """
    for name in [*_LAUNCHER_VARS, *(v for v in os.environ if v.startswith("TORCHELASTIC_"))]:
        os.environ.pop(name, None)


class RolloutProcessError(RuntimeError):
    """A rollout process failed or exited."""


class RemoteRolloutEngines(RolloutEngine):
    """Rollout engines in separate processes behind the engine interface (trainer side).

    Weights do not go through :meth:`update_weights`: :meth:`weight_sender` returns the sender
    whose ``send`` tells every process to receive and broadcasts the buckets to them.
    ``colocated``: some process shares a GPU with the trainer (sleep during the update).
    """

    def __init__(
        self,
        specs: list[EngineSpec],
        transport: str = "gloo",
        bucket_bytes: int = 512 << 20,
        timeout_s: float = 600.0,
        colocated: bool = False,
    ) -> None:
        if not specs:
            raise ValueError("need at least one rollout process")
        if transport not in ("gloo", "nccl"):
            raise ValueError(f"transport must be 'gloo' or 'nccl', got {transport!r}")
        self.timeout_s = timeout_s
        self.colocated = colocated
        ctx = mp.get_context("spawn")
        port = free_port()
        world = len(specs) + 1
        self._conns, self._procs = [], []
        for rank, spec in enumerate(specs, start=1):
            parent, child = ctx.Pipe()
            rendezvous = StoreRendezvous("127.0.0.1", port, rank, world, timeout_s)
            visible, spec = _only_its_gpu(spec)
            proc = ctx.Process(
                target=serve,
                args=(child, spec, transport, rendezvous, os.getpid()),
                name=f"rollout-{rank - 1}",
            )
            with _environment(CUDA_VISIBLE_DEVICES=visible):  # inherited by the new process
                proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)
        for index in range(len(specs)):
            self._reply(index, timeout_s)  # "hello": it runs
        for index in range(len(specs)):
            self._reply(index, timeout_s)  # "ready": engine built, about to join the group
        # The group is joined after every engine is built: a build that fails is seen here
        # (exit code, traceback) instead of as a rendezvous that never completes.
        device = torch.device("cuda", torch.cuda.current_device()) if transport == "nccl" else None
        sender = make_weight_sender(
            transport,
            rendezvous=StoreRendezvous("127.0.0.1", port, 0, world, timeout_s),
            bucket_bytes=bucket_bytes,
            device=device,
        )
        self._sender = _RemoteWeightSender(self, sender)

    # ---- protocol ----------------------------------------------------------------------------

    def _reply(self, index: int, timeout_s: float | None = None) -> Any:
        conn, proc = self._conns[index], self._procs[index]
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not conn.poll(1.0):
            if not proc.is_alive():
                raise RolloutProcessError(
                    f"rollout process {index} exited (code {proc.exitcode}) without replying"
                )
            if deadline is not None and time.monotonic() > deadline:
                proc.kill()
                raise RolloutProcessError(
                    f"rollout process {index} did not start within {timeout_s:.0f} s (killed); "
                    f"its output is in the trainer's log"
                )
        try:
            status, value = conn.recv()
        except EOFError as error:
            proc.join(5)
            raise RolloutProcessError(
                f"rollout process {index} exited (code {proc.exitcode})"
            ) from error
        if status == "error":
            raise RolloutProcessError(f"rollout process {index} failed:\n{value}")
        return value

    def _send(self, index: int, command: str, args: tuple = ()) -> None:
        try:
            self._conns[index].send((command, args))
        except (BrokenPipeError, ConnectionResetError) as error:
            proc = self._procs[index]
            proc.join(5)
            raise RolloutProcessError(
                f"rollout process {index} exited (code {proc.exitcode})"
            ) from error

    def _call_all(self, command: str, args: list[tuple] | None = None) -> list[Any]:
        for index in range(len(self._conns)):
            self._send(index, command, args[index] if args else ())
        return [self._reply(index) for index in range(len(self._conns))]

    # ---- engine interface ----------------------------------------------------------------------

    def generate(
        self,
        prompt_token_ids: list[list[int]],
        params: SamplingParams,
        prompt_seeds: list[int] | None = None,
    ) -> list[RolloutSample]:
        """Contiguous prompt chunks per process; samples come back in prompt order. Each
        prompt keeps its own seed, so the samples do not depend on the number of processes."""
        return self.submit(prompt_token_ids, params, prompt_seeds)()

    def submit(
        self,
        prompt_token_ids: list[list[int]],
        params: SamplingParams,
        prompt_seeds: list[int] | None = None,
    ) -> Callable[[], list[RolloutSample]]:
        """The processes start generating; the returned function waits for their replies.
        Nothing else may be sent to them before it is called."""
        chunks = split_prompts(prompt_token_ids, params, prompt_seeds, len(self._conns))
        for index, (_, ids, seeds) in enumerate(chunks):
            self._send(index, "generate", (ids, params, seeds))
        starts = [start for start, _, _ in chunks]
        return lambda: merge_chunks(starts, [self._reply(i) for i in range(len(chunks))])

    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        raise TypeError("remote rollout engines receive weights through weight_sender()")

    def weight_sender(self) -> WeightSender:
        return self._sender

    def sleep(self) -> None:
        """Only when a process shares a GPU with the trainer: on its own GPU, freeing memory
        during the update gains nothing and waking up costs time."""
        if self.colocated:
            self._call_all("sleep")

    def wake_up(self) -> None:
        if self.colocated:
            self._call_all("wake_up")

    def close(self) -> None:
        for conn in self._conns:
            with contextlib.suppress(BrokenPipeError, OSError):
                conn.send(("close", ()))
        for proc in self._procs:
            proc.join(30)
            if proc.is_alive():
                proc.kill()
        self._sender.close()

    @property
    def pids(self) -> list[int]:
        return [proc.pid for proc in self._procs]


class _RemoteWeightSender(WeightSender):
    """Tell every rollout process to receive, broadcast the buckets, wait for them to load."""

    def __init__(self, engines: RemoteRolloutEngines, sender: WeightSender) -> None:
        self.engines, self.sender = engines, sender

    def send(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> SyncStats:
        for index in range(len(self.engines._conns)):
            self.engines._send(index, "receive")
        stats = self.sender.send(named_tensors)
        for index in range(len(self.engines._conns)):
            self.engines._reply(index)
        return stats

    def close(self) -> None:
        self.sender.close()


# ---- rollout process ----------------------------------------------------------------------------


def serve(conn, spec: EngineSpec, transport: str, rendezvous: StoreRendezvous, parent: int):
    """Entry point of a rollout process: build the engine, then answer commands until close."""
    die_with_parent()
    if os.getppid() != parent:  # the trainer died before the line above
        os._exit(1)
    leave_launcher_world()
    receiver = None
    where = spec.device
    try:
        conn.send(("ok", "hello"))
        device = None
        if spec.device.startswith("cuda"):
            _check_one_gpu()
            where = f"{spec.device} = GPU {os.environ['CUDA_VISIBLE_DEVICES']}"
        name = f"rollout process {rendezvous.rank - 1} (pid {os.getpid()}, {where})"
        if transport == "nccl":
            torch.cuda.set_device(torch.device(spec.device))
            device = torch.device(spec.device)
        _progress(f"{name}: building the {spec.backend} engine")
        engine = build_engine(spec)
        freeze_long_lived()  # the engine is built: its objects live all run (`heap.py`)
        conn.send(("ok", "ready"))
        _progress(f"{name}: joining the {transport} weight-sync group")
        receiver = make_weight_receiver(transport, rendezvous=rendezvous, device=device)
        _progress(f"{name}: ready")
        _serve_commands(conn, engine, receiver)
    except BaseException:  # noqa: BLE001 - reported to the trainer, then exit non-zero
        try:
            conn.send(("error", traceback.format_exc()))
        finally:
            os._exit(1)
    finally:
        if receiver is not None:
            receiver.close()


def _progress(message: str) -> None:
    # Plain stderr: a spawned process has no logging configuration of the trainer's.
    print(message, file=sys.stderr, flush=True)


def _only_its_gpu(spec: EngineSpec) -> tuple[str | None, EngineSpec]:
    """The ``CUDA_VISIBLE_DEVICES`` a rollout process starts with (its GPU alone, which it sees
    as cuda:0) and the spec it builds its engine from; ``None``: leave the variable as it is.

    vLLM places its worker on cuda:<local rank> = cuda:0 whatever the current device is, so
    `cuda:1` must be the only visible GPU rather than merely the current one. The variable is
    set in the environment the process starts with: CUDA reads it once, when the driver
    initialises, which an import may do before any code of ours runs.
    """
    if not spec.device.startswith("cuda"):
        return None, spec
    # Plain "cuda": the trainer's own current GPU (a colocated engine).
    index = int(spec.device.split(":", 1)[1]) if ":" in spec.device else torch.cuda.current_device()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    physical = visible.split(",")[index] if visible else str(index)
    return physical, replace(spec, device="cuda:0")


@contextlib.contextmanager
def _environment(**values: str | None):
    """Set (or, for None, leave) environment variables for the duration of the block."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update({name: value for name, value in values.items() if value is not None})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _check_one_gpu() -> None:
    count = torch.cuda.device_count()
    if count != 1:
        raise RuntimeError(
            f"a rollout process must see only its own GPU, but it sees {count} "
            f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r})"
        )


def _serve_commands(conn, engine: RolloutEngine, receiver) -> None:
    while True:
        try:
            command, args = conn.recv()
        except EOFError:  # the trainer closed its end
            return
        if command == "close":
            return
        if command == "generate":
            conn.send(("ok", engine.generate(*args)))
        elif command == "receive":
            conn.send(("ok", receiver.receive_into(engine)))
        elif command in ("sleep", "wake_up"):
            getattr(engine, command)()
            conn.send(("ok", None))
        else:
            raise ValueError(f"unknown rollout command {command!r}")

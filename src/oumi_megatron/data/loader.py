"""Prompt batches per GRPO step: identical on every rank, resumable to the exact prompt.

Each epoch visits the prompts in a permutation that is a pure function of ``(seed, epoch)``
(``random.Random`` seeded with a string, which CPython hashes with SHA-512, so it is stable
across processes and machines). The position is ``(epoch, index)`` into that permutation, so
the state to save is just ``seed``, ``epoch``, ``index`` (+ ``step`` and a dataset fingerprint
to catch resuming on different data): no RNG object has to be pickled. A step that crosses
the end of an epoch is completed from the next epoch's permutation, so every step is full.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from oumi_megatron.data.prompts import PromptExample

_STATE_VERSION = 1


@dataclass(frozen=True)
class PromptStep:
    """The prompts of one step: ``prompts`` (global, same on all ranks) and this rank's slice."""

    step: int
    epoch: int  # epoch of the step's first prompt
    prompts: list[PromptExample]
    local: list[PromptExample]


def _fingerprint(dataset: Sequence[PromptExample]) -> str:
    method = getattr(dataset, "fingerprint", None)
    if callable(method):
        return str(method())
    digest = hashlib.sha256("\0".join(e.sample_id for e in dataset).encode())
    return digest.hexdigest()[:16]


class PromptDataLoader(Iterator[PromptStep]):
    """Endless iterator of ``PromptStep``; ``state_dict``/``load_state_dict`` resume exactly."""

    def __init__(
        self,
        dataset: Sequence[PromptExample],
        prompts_per_step: int,
        seed: int = 0,
        dp_rank: int = 0,
        dp_size: int = 1,
        shuffle: bool = True,
    ) -> None:
        if len(dataset) == 0:
            raise ValueError("the prompt dataset is empty")
        if prompts_per_step < 1 or dp_size < 1 or not 0 <= dp_rank < dp_size:
            raise ValueError(
                f"need prompts_per_step >= 1 and 0 <= dp_rank < dp_size, got "
                f"{prompts_per_step}, {dp_rank}, {dp_size}"
            )
        if prompts_per_step % dp_size:
            raise ValueError(
                f"prompts_per_step ({prompts_per_step}) must be a multiple of the data-parallel "
                f"size ({dp_size}) so that every rank gets the same number of prompts"
            )
        self.dataset = dataset
        self.prompts_per_step = prompts_per_step
        self.seed = seed
        self.dp_rank, self.dp_size = dp_rank, dp_size
        self.shuffle = shuffle
        self.epoch = 0
        self.index = 0  # next position in the current epoch's order
        self.step = 0
        self._fingerprint = _fingerprint(dataset)
        self._order_epoch = -1
        self._order: list[int] = []

    @property
    def steps_per_epoch(self) -> float:
        """Steps to see every prompt once (fractional when the size is not a multiple)."""
        return len(self.dataset) / self.prompts_per_step

    def epoch_order(self, epoch: int) -> list[int]:
        """Dataset indices in the order epoch ``epoch`` visits them."""
        if epoch != self._order_epoch:
            order = list(range(len(self.dataset)))
            if self.shuffle:
                random.Random(f"prompt-loader:{self.seed}:{epoch}").shuffle(order)
            self._order, self._order_epoch = order, epoch
        return self._order

    def local_slice(self, prompts: Sequence[PromptExample]) -> list[PromptExample]:
        """This rank's contiguous share of a step's prompts."""
        per_rank = len(prompts) // self.dp_size
        return list(prompts[self.dp_rank * per_rank : (self.dp_rank + 1) * per_rank])

    def __iter__(self) -> PromptDataLoader:
        return self

    def __next__(self) -> PromptStep:
        first_epoch = self.epoch
        prompts: list[PromptExample] = []
        while len(prompts) < self.prompts_per_step:
            order = self.epoch_order(self.epoch)
            take = min(self.prompts_per_step - len(prompts), len(order) - self.index)
            prompts.extend(self.dataset[i] for i in order[self.index : self.index + take])
            self.index += take
            if self.index == len(order):
                self.epoch, self.index = self.epoch + 1, 0
        step = PromptStep(self.step, first_epoch, prompts, self.local_slice(prompts))
        self.step += 1
        return step

    def state_dict(self) -> dict[str, Any]:
        """Position to resume from (plain ints and strings: checkpoint-friendly)."""
        return {
            "version": _STATE_VERSION,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "epoch": self.epoch,
            "index": self.index,
            "step": self.step,
            "dataset_size": len(self.dataset),
            "fingerprint": self._fingerprint,
        }

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> None:
        """Continue where ``state`` was saved. ``strict`` rejects a different dataset or seed.

        ``prompts_per_step`` and the DP layout may differ from the saved run: the position is
        counted in prompts of the global order, not in steps or ranks.
        """
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"unknown prompt loader state version {state.get('version')!r}")
        if strict:
            for key, mine in (
                ("fingerprint", self._fingerprint),
                ("seed", self.seed),
                ("shuffle", self.shuffle),
            ):
                if state[key] != mine:
                    raise ValueError(
                        f"prompt loader state has {key} {state[key]!r} but this run has "
                        f"{mine!r}: resuming would change the order of prompts. Fix: resume "
                        f"with the same data.train.datasets and seed (or load with strict=False)"
                    )
        if not 0 <= state["index"] < len(self.dataset):
            raise ValueError(f"index {state['index']} is outside the dataset ({len(self.dataset)})")
        self.seed, self.shuffle = state["seed"], state["shuffle"]
        self.epoch, self.index, self.step = state["epoch"], state["index"], state["step"]
        self._order_epoch = -1

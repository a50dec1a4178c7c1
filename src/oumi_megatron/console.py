"""A quiet, informative console: third-party noise filtered once, at process start.

Each process configures logging the same way before heavy imports: the root logger shows
warnings and errors, ``oumi_megatron`` shows its INFO lines on global rank 0 (other ranks show
warnings and errors, prefixed with their rank), and messages that say nothing actionable to a
user of this trainer are dropped: Megatron's and Bridge's notes that Transformer Engine / Apex
are absent (the torch paths are the design here), deprecation notes of APIs we do not call, and
build-time chatter. Anything else still gets through.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import warnings

# (message regex, category) of Python warnings to drop.
NOISY_WARNINGS: tuple[tuple[str, type[Warning]], ...] = (
    (r"(Transformer Engine|Apex) (and Apex )?(are|is) not installed", UserWarning),
    (r"Only transformer-engine>=", UserWarning),
    (r"MimoModelConfig is experimental", UserWarning),
    (r"full scope is deprecated", UserWarning),
    (r"invalid escape sequence", SyntaxWarning),
)
# Loggers whose INFO/WARNING lines are about optional accelerators or internals: shown from
# ERROR up.
NOISY_LOGGERS: tuple[str, ...] = (
    "torchao",
    "torch.utils.cpp_extension",
    "megatron.bridge.utils.import_utils",  # the FP8GlobalStateManager traceback (no TE)
    "megatron.bridge.utils.fusions",  # gradient_accumulation_fusion needs TE/Apex
    "megatron.core.models.gpt.gpt_model",  # "GPTModel IS DEPRECATED"
    "megatron.core.dist_checkpointing.strategies.torch",  # async save deprecation
    "transformers.integrations.integration_utils",  # comet_ml without an API key
)
# (logger, message regex) of single log lines to drop.
NOISY_LOG_LINES: tuple[tuple[str, str], ...] = (
    ("transformers.configuration_utils", r"`torch_dtype` is deprecated"),  # Bridge passes it
)

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _RankFormatter(logging.Formatter):
    """Names the rank where it matters: on every line of ranks > 0, and on rank 0's warnings
    and errors (its INFO lines speak for the job)."""

    def __init__(self, rank: int):
        super().__init__(_FORMAT)
        self.rank = rank

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        if self.rank or record.levelno >= logging.WARNING:
            return f"[rank {self.rank}] {line}"
        return line


class _Drop(logging.Filter):
    def __init__(self, keep):
        super().__init__()
        self.keep = keep

    def filter(self, record: logging.LogRecord) -> bool:
        return self.keep(record)


def _filter(name: str, keep) -> None:
    logger = logging.getLogger(name)
    if not any(isinstance(f, _Drop) for f in logger.filters):
        logger.addFilter(_Drop(keep))


@contextlib.contextmanager
def quiet_stdout():
    """Drops what third-party code ``print``s inside (parameter counts, "Success: ..."), while
    logging (stderr) and our progress bars still show."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def setup_console() -> None:
    """Logging and warning filters for this process (idempotent); reads RANK/WORLD_SIZE."""
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    logging.basicConfig(level=logging.WARNING, format=_FORMAT, force=True)
    if world > 1:
        for handler in logging.getLogger().handlers:
            handler.setFormatter(_RankFormatter(rank))
    logging.getLogger("oumi_megatron").setLevel(logging.INFO if rank == 0 else logging.WARNING)
    # Filters, not levels: some of these modules set their own level when imported.
    for name in NOISY_LOGGERS:
        _filter(name, lambda record: record.levelno >= logging.ERROR)
    for name, pattern in NOISY_LOG_LINES:
        _filter(name, lambda record, p=re.compile(pattern): not p.search(record.getMessage()))
    for pattern, category in NOISY_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern, category=category)
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # our progress bars say more
    if "transformers" in sys.modules:  # imported already (by Oumi's CLI): tell it directly
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


def apply_log_level(level: str) -> None:
    """``training.log_level`` for our messages: all of them on rank 0; on other ranks never
    below WARNING (their INFO lines repeat rank 0's)."""
    value = logging.getLevelName(str(level).upper())
    if not isinstance(value, int):
        return  # Oumi validates the name; keep the default if it is unknown here
    if int(os.environ.get("RANK", "0")) != 0:
        value = max(value, logging.WARNING)
    logging.getLogger("oumi_megatron").setLevel(value)

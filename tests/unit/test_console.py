"""The console set-up: third-party noise dropped, everything else kept (console.py)."""

from __future__ import annotations

import logging
import warnings

import pytest

from oumi_megatron import console


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    filters = warnings.filters[:]
    yield
    root.handlers[:], warnings.filters[:] = handlers, filters
    root.setLevel(level)
    logging.getLogger("oumi_megatron").setLevel(logging.NOTSET)


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_noise_is_dropped_and_the_rest_kept(restore_logging, monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    console.setup_console()
    with warnings.catch_warnings(record=True) as caught:
        warnings.filters[:] = [f for f in warnings.filters if f[0] == "ignore"]
        warnings.warn(
            "Transformer Engine and Apex are not installed. Falling back", UserWarning, stacklevel=1
        )
        warnings.warn("a real problem", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["a real problem"]
    collect = _Collect()
    for name in ("megatron.bridge.utils.import_utils", "transformers.configuration_utils"):
        logging.getLogger(name).setLevel(logging.INFO)  # as Bridge does for its logger
        logging.getLogger(name).addHandler(collect)  # (transformers' loggers do not propagate)
    logging.getLogger("megatron.bridge.utils.import_utils").info("Import of FP8... failed")
    logging.getLogger("megatron.bridge.utils.import_utils").error("a real error")
    logging.getLogger("transformers.configuration_utils").warning("`torch_dtype` is deprecated!")
    logging.getLogger("transformers.configuration_utils").warning("something else")
    try:
        assert collect.messages == ["a real error", "something else"]
    finally:
        for name in ("megatron.bridge.utils.import_utils", "transformers.configuration_utils"):
            logging.getLogger(name).removeHandler(collect)
    formatter = logging.getLogger().handlers[0].formatter
    info = logging.LogRecord("oumi_megatron", logging.INFO, "", 0, "layout: ...", (), None)
    warning = logging.LogRecord("oumi_megatron", logging.WARNING, "", 0, "careful", (), None)
    assert "[rank" not in formatter.format(info)  # rank 0's INFO lines speak for the job
    assert formatter.format(warning).startswith("[rank 0] ")


def test_log_level_applies_to_our_messages(monkeypatch):
    import logging

    from oumi_megatron.console import apply_log_level

    ours = logging.getLogger("oumi_megatron")
    before = ours.level
    try:
        monkeypatch.setenv("RANK", "0")
        apply_log_level("debug")
        assert ours.level == logging.DEBUG
        monkeypatch.setenv("RANK", "3")
        apply_log_level("info")
        assert ours.level == logging.WARNING
        apply_log_level("error")
        assert ours.level == logging.ERROR
    finally:
        ours.setLevel(before)

"""Default CPU threads when OMP_NUM_THREADS is unset (parallel/threads.py)."""

from __future__ import annotations

import pytest

from oumi_megatron.parallel import threads


@pytest.mark.parametrize(
    ("cpus", "local", "expected"),
    [(2, 1, 1), (16, 1, 15), (16, 2, 7), (16, 8, 1), (4, 8, 1), (1, 1, 1)],
)
def test_default_threads(cpus, local, expected):
    assert threads.default_threads(cpus, local) == expected


def test_a_set_value_is_kept(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.set_default_threads() is None


def test_unset_is_chosen_and_exported(monkeypatch):
    import torch

    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    monkeypatch.setattr(threads, "usable_cpus", lambda: 3)
    try:
        assert threads.set_default_threads() == 2
        assert torch.get_num_threads() == 2
        assert threads.os.environ["OMP_NUM_THREADS"] == "2"
    finally:
        torch.set_num_threads(before)

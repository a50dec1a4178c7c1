"""Checkpoint trust: loading a DCP checkpoint builds data only; a crafted `.metadata` or byte
entry is refused before its payload runs (and runs without the guard: the test can fail)."""

from __future__ import annotations

import pickle

import pytest
import torch
import torch.distributed.checkpoint as dcp

from oumi_megatron.model.safe_load import UntrustedCheckpointError, trusted_loading


class _WritesAFile:
    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('ran')",)


def _save(directory, state) -> None:
    dcp.save(state, storage_writer=dcp.FileSystemWriter(str(directory)))


def _load(directory, template) -> dict:
    dcp.load(template, storage_reader=dcp.FileSystemReader(str(directory)))
    return template


def test_our_checkpoint_data_loads(tmp_path):
    state = {"w": torch.arange(6.0).view(2, 3), "meta": {"step": 3, "lr": [0.1, 0.2]}}
    _save(tmp_path, state)
    template = {"w": torch.zeros(2, 3), "meta": {"step": 0, "lr": None}}
    with trusted_loading():
        loaded = _load(tmp_path, template)
    assert torch.equal(loaded["w"], state["w"]) and loaded["meta"] == state["meta"]
    assert torch.load.__name__ == "load" and "weights_only" not in str(torch.load)  # restored


def test_a_crafted_metadata_file_is_refused_and_does_not_run(tmp_path):
    _save(tmp_path, {"w": torch.ones(2)})
    marker = tmp_path / "pwned"
    (tmp_path / ".metadata").write_bytes(pickle.dumps(_WritesAFile(marker)))
    with pytest.raises(UntrustedCheckpointError, match="builtins.exec"), trusted_loading():
        _load(tmp_path, {"w": torch.zeros(2)})
    assert not marker.exists()
    with pytest.raises(BaseException):  # noqa: B017 - without the guard the payload runs
        _load(tmp_path, {"w": torch.zeros(2)})
    assert marker.read_text() == "ran"


def test_a_crafted_byte_entry_is_refused_and_does_not_run(tmp_path):
    marker = tmp_path / "pwned"
    _save(tmp_path, {"w": torch.ones(2), "obj": _WritesAFile(marker)})
    with pytest.raises(UntrustedCheckpointError, match="entry asks for exec"), trusted_loading():
        _load(tmp_path, {"w": torch.zeros(2), "obj": None})
    assert not marker.exists()

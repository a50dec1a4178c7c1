"""Weights through a shared directory: safetensors bucket files plus a manifest per version.

Layout::

    DIR/v00000003/bucket_00000.safetensors ...   one file per bucket
    DIR/v00000003/manifest.json                   bucket files and tensor order
    DIR/LATEST                                    "3"

A version is written into a hidden temp folder and renamed into place (atomic on one
filesystem), and only then is ``LATEST`` replaced (tmp file + ``os.replace``): a reader that
follows ``LATEST`` never sees a half-written version. Old versions beyond ``keep_versions``
are deleted, so a reader must finish a version before ``keep_versions`` newer ones appear.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from oumi_megatron.rollout.base import RolloutEngine
from oumi_megatron.rollout.buckets import DEFAULT_BUCKET_BYTES, NamedTensor, bucketize
from oumi_megatron.rollout.transports.base import SyncStats, WeightReceiver, WeightSender

LATEST = "LATEST"
MANIFEST = "manifest.json"
FORMAT_VERSION = 1


def version_dir(directory: Path, version: int) -> Path:
    return directory / f"v{version:08d}"


def latest_version(directory: str | Path) -> int | None:
    path = Path(directory) / LATEST
    try:
        return int(path.read_text().strip())
    except FileNotFoundError:
        return None


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _savable(bucket: list[NamedTensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous, and no two entries sharing memory (safetensors refuses aliases,
    e.g. tied embedding and lm_head sent under both names)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, tensor in bucket:
        t = tensor.detach().to("cpu").contiguous()
        storage = t.untyped_storage()
        # Views into a bigger buffer (e.g. a received bucket) also count as shared.
        if t.numel() and (storage.data_ptr() in seen or storage.nbytes() != t.nbytes):
            t = t.clone()
        seen.add(t.untyped_storage().data_ptr())
        out[name] = t
    return out


class CheckpointWeightSender(WeightSender):
    """Writes each :meth:`send` as a new version under ``directory``."""

    def __init__(
        self,
        directory: str | Path,
        bucket_bytes: int = DEFAULT_BUCKET_BYTES,
        keep_versions: int = 2,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.bucket_bytes = bucket_bytes
        self.keep_versions = max(1, keep_versions)

    def send(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> SyncStats:
        stats = SyncStats()
        version = (latest_version(self.directory) or 0) + 1
        tmp = self.directory / f".v{version:08d}.{uuid.uuid4().hex}.tmp"
        tmp.mkdir()
        try:
            buckets = []
            for index, bucket in enumerate(bucketize(named_tensors, self.bucket_bytes)):
                filename = f"bucket_{index:05d}.safetensors"
                save_file(_savable(bucket), str(tmp / filename))
                # safetensors does not keep insertion order: the manifest does.
                buckets.append({"file": filename, "names": [name for name, _ in bucket]})
                stats.add_bucket(bucket)
            manifest = {
                "format": FORMAT_VERSION,
                "version": version,
                "buckets": buckets,
                "num_tensors": stats.num_tensors,
                "num_bytes": stats.num_bytes,
            }
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
            os.replace(tmp, version_dir(self.directory, version))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _write_atomic(self.directory / LATEST, f"{version}\n")
        self._prune(version)
        return stats.done()

    def _prune(self, newest: int) -> None:
        for old in range(newest - self.keep_versions, 0, -1):
            path = version_dir(self.directory, old)
            if not path.exists():
                break
            shutil.rmtree(path, ignore_errors=True)


def read_manifest(directory: str | Path, version: int) -> dict:
    manifest = json.loads((version_dir(Path(directory), version) / MANIFEST).read_text())
    if manifest.get("format") != FORMAT_VERSION:
        raise ValueError(f"unsupported weight manifest format {manifest.get('format')!r}")
    return manifest


def iter_checkpoint_buckets(
    directory: str | Path, version: int, device: str | torch.device = "cpu"
) -> Iterator[list[NamedTensor]]:
    """Buckets of one version, in the order they were sent, one file in memory at a time."""
    root = version_dir(Path(directory), version)
    for bucket in read_manifest(directory, version)["buckets"]:
        with safe_open(str(root / bucket["file"]), framework="pt", device=str(device)) as f:
            yield [(name, f.get_tensor(name)) for name in bucket["names"]]


class CheckpointWeightReceiver(WeightReceiver):
    """Applies the newest version not yet applied, waiting up to ``timeout_s`` for one."""

    def __init__(
        self,
        directory: str | Path,
        device: str | torch.device = "cpu",
        timeout_s: float = 0.0,
        poll_s: float = 0.2,
    ) -> None:
        self.directory = Path(directory)
        self.device = device
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self.applied_version = 0

    def wait_for_new_version(self) -> int:
        deadline = time.monotonic() + self.timeout_s
        while True:
            version = latest_version(self.directory)
            if version is not None and version > self.applied_version:
                return version
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"no weights newer than version {self.applied_version} in {self.directory}"
                )
            time.sleep(self.poll_s)

    def receive_into(self, engine: RolloutEngine) -> SyncStats:
        stats = SyncStats()
        version = self.wait_for_new_version()
        for bucket in iter_checkpoint_buckets(self.directory, version, self.device):
            engine.update_weights(bucket)
            stats.add_bucket(bucket)
        engine.finish_weight_update()
        self.applied_version = version
        return stats.done()

"""Identify a Hugging Face checkpoint cheaply: config plus safetensors headers and sizes.

Hashing multi-GB weight files on every start would cost minutes; the safetensors header names
every tensor with its dtype, shape and byte offsets, so together with the file size it changes
whenever the weights are replaced by a differently shaped or re-saved checkpoint.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

FORMAT_VERSION = 1


def _header_digest(path: Path) -> str:
    with path.open("rb") as handle:
        (header_len,) = struct.unpack("<Q", handle.read(8))
        header = handle.read(header_len)
        # A short prefix of the data catches same-shape weights saved over the original.
        data_prefix = handle.read(1 << 16)
    return hashlib.sha256(header + data_prefix).hexdigest()


def hf_fingerprint(hf_dir: str | Path) -> dict:
    """A JSON-able description of the checkpoint at `hf_dir` that changes when its weights do."""
    hf_dir = Path(hf_dir)
    config_bytes = (hf_dir / "config.json").read_bytes()
    weights = sorted(hf_dir.glob("*.safetensors"))
    if not weights:
        raise FileNotFoundError(
            f"no *.safetensors files in {hf_dir}: convert the checkpoint to safetensors first "
            "(oumi-megatron loads tensors with weights_only semantics and no pickles)"
        )
    return {
        "format_version": FORMAT_VERSION,
        "config_sha256": hashlib.sha256(config_bytes).hexdigest(),
        "weights": {
            w.name: {"bytes": w.stat().st_size, "header_sha256": _header_digest(w)} for w in weights
        },
    }

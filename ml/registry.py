"""Model artifacts: written under one root with their sha256; read back only from that root
and only when the bytes still match the hash recorded for the run, because unpickling runs
code and a model file from anywhere else must never be loaded."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import joblib


class ArtifactError(RuntimeError):
    """An artifact outside the registry, missing, or not what the run recorded."""


def save_artifact(obj: Any, root: Path, run_id: str, name: str) -> tuple[Path, str]:
    """Write ``obj`` to ``root/run_id/name.joblib`` (atomically); return its path and sha256."""
    buffer = io.BytesIO()
    joblib.dump(obj, buffer, compress=3)
    data = buffer.getvalue()
    folder = root / run_id
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.joblib"
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return path, hashlib.sha256(data).hexdigest()


def load_artifact(path: Path, expected_sha256: str, root: Path) -> Any:
    resolved, base = path.resolve(), root.resolve()
    if not resolved.is_relative_to(base):
        raise ArtifactError(f"{path} lies outside the model registry {root}: refusing to load")
    if not resolved.is_file():
        raise ArtifactError(f"{path}: no such artifact")
    data = resolved.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected_sha256:
        raise ArtifactError(
            f"{path}: sha256 {actual} is not the {expected_sha256} recorded for its run"
        )
    return joblib.load(io.BytesIO(data))

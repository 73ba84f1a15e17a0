"""The landing zone: which files an extract has, and what their ``.ok`` markers say."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from data_contracts import Contract

REJECTED_DIR = "_rejected"
_NAME = re.compile(r"^(?P<extract>[a-z_]+)_(?P<date>\d{8})(?:_(?P<seq>\d{2}))?\.(?P<ext>[a-z]+)$")


@dataclass(frozen=True)
class LandingFile:
    """A data file of an extract, as found in the landing zone."""

    path: Path
    relative: str  # path below the landing root: the file's identity in the ledger
    extract_date: str  # YYYYMMDD
    seq: int  # 0 for the first extract of the day, NN for a re-extract

    @property
    def marker(self) -> Path:
        return Path(f"{self.path}.ok")

    @property
    def is_marked(self) -> bool:
        return self.marker.exists()


@dataclass(frozen=True)
class Marker:
    rows: int
    sha256: str
    extracted_at: str
    period: str


class MarkerError(ValueError):
    """A marker that cannot be trusted; the file is rejected whole."""


def list_files(landing: Path, contract: Contract) -> list[LandingFile]:
    """The extract's data files, oldest extraction first (re-extracts after their original).

    Files whose names do not follow ``<extract>_<YYYYMMDD>[_NN].<ext>`` are not the extract's
    and are left alone; markers are never data files.
    """
    folder = landing / contract.folder
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        m = _NAME.match(path.name)
        if not m or m["extract"] != contract.extract or m["ext"] != contract.extension:
            continue
        found.append(
            LandingFile(
                path=path,
                relative=f"{contract.folder}/{path.name}",
                extract_date=m["date"],
                seq=int(m["seq"] or 0),
            )
        )
    return sorted(found, key=lambda f: (f.extract_date, f.seq, f.relative))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_marker(file: LandingFile) -> Marker:
    """Parse a ``.ok`` marker, naming the field that is wrong."""
    try:
        doc = json.loads(file.marker.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MarkerError(f"{file.relative}.ok: marker is not readable JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise MarkerError(f"{file.relative}.ok: marker is not a JSON object")
    rows, sha, period = doc.get("rows"), doc.get("sha256"), doc.get("period")
    if not isinstance(rows, int) or isinstance(rows, bool) or rows < 0:
        raise MarkerError(
            f"{file.relative}.ok: field 'rows' must be a non-negative integer, got {rows!r}"
        )
    if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", sha):
        raise MarkerError(f"{file.relative}.ok: field 'sha256' must be 64 hex digits, got {sha!r}")
    if not isinstance(period, str) or not re.fullmatch(r"20\d{2}(0[1-9]|1[0-2])", period):
        raise MarkerError(f"{file.relative}.ok: field 'period' must be YYYYMM, got {period!r}")
    return Marker(
        rows=rows, sha256=sha.lower(), extracted_at=str(doc.get("extracted_at", "")), period=period
    )


def marker_period(file: LandingFile) -> str | None:
    """The business month (YYYYMM) a marked file's marker names; None when it cannot be read
    (ingestion rejects such a file with the reason, whichever month's run sees it)."""
    try:
        return read_marker(file).period
    except MarkerError:
        return None


def move_aside(landing: Path, file: LandingFile, reason: str) -> Path:
    """Move a rejected file (and its marker) out of the extract's folder, with the reason."""
    target = landing / REJECTED_DIR / file.relative
    target.parent.mkdir(parents=True, exist_ok=True)
    if file.path.exists():
        file.path.replace(target)
    if file.marker.exists():
        file.marker.replace(Path(f"{target}.ok"))
    Path(f"{target}.reason.txt").write_text(reason + "\n", "utf-8")
    return target


def rejected_files(landing: Path, contract: Contract) -> list[str]:
    """Relative paths of the extract's files that were moved aside."""
    folder = landing / REJECTED_DIR / contract.folder
    if not folder.is_dir():
        return []
    return sorted(f"{contract.folder}/{p.name}" for p in folder.iterdir() if _NAME.match(p.name))

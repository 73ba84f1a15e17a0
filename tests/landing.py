"""Landing-zone files made by a test, in the extract's format (source-extracts.md), with their
`.ok` marker."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path

from data_contracts import Contract


def text_file(contract: Contract, header: list[str], records: list[list]) -> bytes:
    """A CSV or JSON Lines file of ``records`` under ``header``, as the contract's producer
    writes it: CSV with its delimiter, CRLF and encoding (what a GBK producer cannot encode
    becomes '?'), JSON Lines in UTF-8."""
    if contract.file_format == "jsonl":
        lines = [
            json.dumps(dict(zip(header, r, strict=False)), ensure_ascii=False) for r in records
        ]
        return "".join(line + "\n" for line in lines).encode("utf-8")
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, delimiter=contract.delimiter or ",", lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows([["" if v is None else str(v) for v in r] for r in records])
    return buf.getvalue().encode(contract.encoding or "utf-8", errors="replace")


def marker(data: bytes, rows: int, period: str, day: str) -> dict:
    """The honest marker of ``data``: its rows, checksum, extraction time and business month."""
    return {
        "rows": rows,
        "sha256": hashlib.sha256(data).hexdigest(),
        "extracted_at": f"{day[:4]}-{day[4:6]}-{day[6:]}T02:00:00+08:00",
        "period": period,
    }


def put(landing: Path, contract: Contract, day: str, data: bytes, mark: dict | None) -> Path:
    """``<landing>/<system>/<extract>/<extract>_<day>.<ext>``, and its marker unless None."""
    path = landing / contract.folder / f"{contract.extract}_{day}.{contract.extension}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if mark is not None:
        Path(f"{path}.ok").write_text(json.dumps(mark), "utf-8")
    return path

"""Serialise simulated months into the landing zone, exactly as the source systems drop them.

Formats, encodings, file names and ``.ok`` markers follow ``shared/source-extracts.md``; column
names and order come from the data contracts. File-level defects are planned once for the whole
drop and recorded in the truth folder, never in the landing zone.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from data_contracts import Contract
from simulator.calendar import month_add
from simulator.defects import DESTRUCTIVE_FILE_DEFECTS, FILE_DEFECTS, DefectRates

# Day of the month after the period on which each extract is taken.
EXTRACT_DAY = {
    "mkt__cons_archive": 1,
    "mkt__monthly_bill": 6,
    "ami__daily_reading": 1,
    "ami__meter_change": 2,
    "ami__load_curve": 1,
    "crm__work_order": 1,
    "fin__payment": 1,
    "fin__arrears": 1,
    "om__outage": 2,
    "ext__weather_daily": 1,
    "ext__economy_monthly": 15,
}
_MKT_NULLS = np.array(["", "NULL", "\\N"])


@dataclass(frozen=True)
class PlannedFile:
    extract: str
    period: int
    defects: tuple[str, ...]


def plan_file_defects(
    contracts: dict[str, Contract], months: list[int], rates: DefectRates, rng: np.random.Generator
) -> dict[tuple[str, int], tuple[str, ...]]:
    """Pick the files that get each file-level defect; a non-zero rate hits at least one."""
    files = [(name, m) for m in months for name in contracts]
    chosen: dict[tuple[str, int], list[str]] = {f: [] for f in files}
    fated: set[tuple[str, int]] = set()
    for defect in FILE_DEFECTS:
        rate = getattr(rates, defect)
        if rate <= 0:
            continue
        eligible = [f for f in files if _eligible(defect, contracts[f[0]])]
        if defect in DESTRUCTIVE_FILE_DEFECTS:
            eligible = [f for f in eligible if f not in fated]
        if not eligible:
            continue
        k = min(len(eligible), max(1, round(rate * len(eligible))))
        for i in rng.choice(len(eligible), k, replace=False):
            f = eligible[int(i)]
            chosen[f].append(defect)
            if defect in DESTRUCTIVE_FILE_DEFECTS:
                fated.add(f)
    return {f: tuple(d) for f, d in chosen.items()}


def _eligible(defect: str, contract: Contract) -> bool:
    if defect == "bad_encoding":
        return contract.encoding == "gbk"
    if defect == "broken_parquet":
        return contract.file_format == "parquet"
    if defect == "missing_column":
        return len(contract.required_columns) > 1
    return True


def file_name(contract: Contract, period: int, seq: int | None = None) -> str:
    nxt = month_add(period, 1)
    day = dt.date(nxt // 100, nxt % 100, EXTRACT_DAY[contract.name])
    suffix = f"_{seq:02d}" if seq else ""
    return f"{contract.extract}_{day:%Y%m%d}{suffix}.{contract.extension}"


def _break_parquet(data: bytes) -> bytes:
    """Damage a data page behind the intact footer so the file no longer reads.

    Zeroes in an incompressible page (zstd stores such pages raw) would still read, as
    silently wrong numbers, so then the first page header is damaged instead: the defect is a
    file that cannot be read, as the interface defines it.
    """
    cut = len(data) // 2
    damaged = data[:cut] + bytes(512) + data[cut + 512 :]
    try:
        pq.read_table(io.BytesIO(damaged))
    except (OSError, pa.ArrowException):
        return damaged
    return data[:4] + bytes(64) + data[68:]


def _as_text(frame: pl.DataFrame) -> pl.DataFrame:
    """Every column as the text a CSV or JSON export would carry."""
    out = []
    for name, dtype in frame.schema.items():
        col = pl.col(name)
        if dtype == pl.Date:
            out.append(col.dt.strftime("%Y-%m-%d"))
        elif isinstance(dtype, pl.Datetime):
            out.append(col.dt.strftime("%Y-%m-%d %H:%M:%S"))
        elif dtype.is_float():
            out.append(col.round(2).cast(pl.String))
        else:
            out.append(col.cast(pl.String))
    return frame.select(out)


class DropWriter:
    """Writes one extract file (plus marker, plus re-extracts) per extract and month."""

    def __init__(
        self,
        out: Path,
        contracts: dict[str, Contract],
        rates: DefectRates,
        plan: dict[tuple[str, int], tuple[str, ...]],
        rng: np.random.Generator,
    ) -> None:
        self.out = out
        self.contracts = contracts
        self.rates = rates
        self.plan = plan
        self.rng = rng
        self.previous: dict[str, pl.DataFrame] = {}
        self.file_log: list[dict] = []
        self.row_log: dict[str, int] = {}

    def _log_rows(self, kind: str, n: int) -> None:
        if n:
            self.row_log[kind] = self.row_log.get(kind, 0) + int(n)

    def write(self, name: str, period: int, frame: pl.DataFrame) -> None:
        contract = self.contracts[name]
        defects = self.plan.get((name, period), ())
        frame = frame.select(contract.column_names)
        frame = self._row_defects(contract, frame)
        if "missing_column" in defects:
            frame = frame.drop(contract.required_columns[-1])
        if "extra_column" in defects:
            frame = frame.with_columns(pl.lit("SRC-A").alias("DATA_SRC_FLAG"))
        data = self._serialise(contract, frame)
        rows = len(frame)
        if "bad_encoding" in defects:
            data = self._break_gbk(data)
        if "broken_parquet" in defects:
            data = _break_parquet(data)
        folder = self.out / contract.folder
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / file_name(contract, period)
        marker = self._marker(data, rows, period)
        if "marker_rows" in defects:
            marker["rows"] = rows + int(self.rng.integers(1, 6))
        if "marker_checksum" in defects:
            marker["sha256"] = hashlib.sha256(data + b"x").hexdigest()
        if "truncated" in defects:
            data = data[: int(len(data) * self.rng.uniform(0.5, 0.9))]
        path.write_bytes(data)
        if "unmarked" not in defects:
            Path(f"{path}.ok").write_text(json.dumps(marker), "utf-8")
        if "reextract" in defects:
            again = folder / file_name(contract, period, seq=1)
            again.write_bytes(data)
            marker_again = dict(marker, extracted_at=marker["extracted_at"].replace("T0", "T1"))
            Path(f"{again}.ok").write_text(json.dumps(marker_again), "utf-8")
            self.file_log.append(
                {
                    "path": str(again.relative_to(self.out)),
                    "defect": "reextract",
                    "of": str(path.relative_to(self.out)),
                }
            )
        for d in defects:
            if d != "reextract":
                self.file_log.append({"path": str(path.relative_to(self.out)), "defect": d})

    def _marker(self, data: bytes, rows: int, period: int) -> dict:
        nxt = month_add(period, 1)
        hour, minute = int(self.rng.integers(1, 6)), int(self.rng.integers(0, 60))
        return {
            "rows": rows,
            "sha256": hashlib.sha256(data).hexdigest(),
            "extracted_at": f"{nxt // 100:04d}-{nxt % 100:02d}-01T0{hour}:{minute:02d}:00+08:00",
            "period": str(period),
        }

    def _count(self, n: int, rate: float, kind: str) -> int:
        """How many of ``n`` rows a defect strikes; a non-zero rate strikes at least once per
        drop (at its first chance), as the generator's row defects do."""
        k = int(self.rng.binomial(n, rate)) if n else 0
        if k == 0 and n and rate > 0 and kind not in self.row_log:
            k = 1
        return k

    def _row_defects(self, contract: Contract, frame: pl.DataFrame) -> pl.DataFrame:
        rng, rates = self.rng, self.rates
        name = contract.name
        if name in ("fin__payment", "crm__work_order"):
            prev = self.previous.get(name)
            self.previous[name] = frame
            kind = f"late_duplicate:{name}"
            k = self._count(len(prev) if prev is not None else 0, rates.late_duplicate, kind)
            if k:
                frame = pl.concat([frame, prev.sample(k, seed=int(rng.integers(2**31)))])
                self._log_rows(kind, k)
        if len(frame) and contract.file_format != "parquet":
            frame = _as_text(frame)
            k = self._count(len(frame), rates.bad_value, f"bad_value:{name}")
            if k:
                frame = self._bad_values(contract, frame, k)
        kind = f"duplicate_row:{name}"
        k = self._count(len(frame), rates.duplicate_row, kind)
        if k:
            frame = pl.concat([frame, frame.sample(k, seed=int(rng.integers(2**31)))])
            self._log_rows(kind, k)
        return frame

    def _bad_values(self, contract: Contract, frame: pl.DataFrame, k: int) -> pl.DataFrame:
        checked = [
            c for c in contract.columns if c.enum or c.pattern or c.physical_type != "VARCHAR"
        ]
        if not checked:
            return frame
        rows = self.rng.choice(len(frame), k, replace=False)
        col = checked[int(self.rng.integers(len(checked)))]
        bad = "#VALUE!" if col.physical_type != "VARCHAR" else "??"
        values = frame[col.name].to_list()
        for r in rows:
            values[int(r)] = bad
        self._log_rows(f"bad_value:{contract.name}", k)
        return frame.with_columns(pl.Series(col.name, values, dtype=pl.String))

    def _serialise(self, contract: Contract, frame: pl.DataFrame) -> bytes:
        if contract.file_format == "parquet":
            buf = io.BytesIO()
            frame.write_parquet(buf, compression="zstd", statistics=False)
            return buf.getvalue()
        if contract.file_format == "jsonl":
            lines = []
            for row in _as_text(frame).iter_rows(named=True):
                version = row.get("version")
                if isinstance(version, str) and version.isdigit():
                    row["version"] = int(version)
                lines.append(json.dumps(row, ensure_ascii=False))
            return "".join(line + "\n" for line in lines).encode("utf-8")
        frame = _as_text(frame)
        if contract.encoding == "gbk":
            # The marketing system writes nulls as empty, NULL or \N, at random.
            tokens = self.rng.choice(_MKT_NULLS, len(frame))
            frame = frame.with_columns(
                [pl.col(c).fill_null(pl.Series(tokens)) for c in frame.columns]
            )
            text = frame.write_csv(
                separator=contract.delimiter, line_terminator="\r\n", quote_style="necessary"
            )
            return text.encode("gbk")
        text = frame.write_csv(separator=contract.delimiter, quote_style="necessary")
        return text.encode(contract.encoding)

    def _break_gbk(self, data: bytes) -> bytes:
        lines = data.split(b"\r\n")
        i = int(self.rng.integers(1, max(2, len(lines) - 1)))
        lines[i] = lines[i][:3] + b"\x80\xff" + lines[i][3:]
        return b"\r\n".join(lines)

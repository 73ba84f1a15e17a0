"""Defect rates: every defect of the source-extracts page, each with its own rate.

Row-level rates are per row (or per account-month, per bill, ...); file-level rates are per file.
A non-zero rate always strikes at least once in the drop (one file, or one row at the first
chance), so that even a small drop carries every defect. All rates are non-zero by default;
``--defect NAME=RATE`` changes one. (The rollover rate picks old meters that start near their
wrap value; whether one wraps inside a short window depends on its consumption.)
"""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class DefectRates:
    # file level
    reextract: float = 0.02  # identical file dropped again as _01
    unmarked: float = 0.005  # data file left without its .ok marker
    marker_rows: float = 0.005  # marker's row count disagrees with the file
    marker_checksum: float = 0.005  # marker's sha256 disagrees with the file
    truncated: float = 0.005  # file cut short after its marker was written
    bad_encoding: float = 0.01  # GBK file with bytes that are not GBK
    broken_parquet: float = 0.01  # Parquet file whose bytes are damaged
    extra_column: float = 0.02  # a column the contract does not know
    missing_column: float = 0.005  # a required column left out
    # row level
    duplicate_row: float = 0.002  # a row repeated inside its file
    late_duplicate: float = 0.002  # a payment or work-order row sent again in a later file
    bad_value: float = 0.0005  # a value that breaks the contract (type, code, pattern)
    orphan: float = 0.002  # rows for accounts no archive knows (crm, fin, ami)
    cons_no_hb: float = 0.10  # crm: CONS_NO typed with the HB prefix
    cons_no_spaces: float = 0.05  # crm, fin: CONS_NO typed with spaces
    unknown_build_date: float = 0.03  # mkt: BUILD_DATE 00000000 or empty
    compact_pay_time: float = 0.30  # fin: PAY_TIME as YYYYMMDDHHMMSS
    utc_z: float = 0.30  # crm: timestamps in UTC with Z instead of +08:00
    correction_bill: float = 0.005  # mkt: BILL_FLAG C bill replacing an earlier bill
    reversal: float = 0.003  # fin: payment reversed, then paid again
    meter_change: float = 0.003  # ami: meter replaced (per account-month)
    rollover: float = 0.01  # ami: old meter register wraps during the window
    missing_day: float = 0.005  # ami: a daily reading not collected
    spike: float = 0.0005  # ami: one reading far off, the next back
    order_disorder: float = 0.01  # crm: finish time before accept time
    tou_mismatch: float = 0.003  # mkt: period energies not adding up to T_PQ

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def with_overrides(self, overrides: dict[str, float]) -> DefectRates:
        unknown = set(overrides) - set(self.names())
        if unknown:
            raise ValueError(f"unknown defect(s) {sorted(unknown)}; known: {self.names()}")
        bad = {k: v for k, v in overrides.items() if not 0.0 <= v <= 1.0}
        if bad:
            raise ValueError(f"defect rates must lie in [0, 1]: {bad}")
        values = {f.name: getattr(self, f.name) for f in fields(self)} | overrides
        return DefectRates(**values)

    @classmethod
    def none(cls) -> DefectRates:
        """A clean drop: no defect at all (for tests that want one defect at a time)."""
        return cls(**dict.fromkeys(cls.names(), 0.0))


# Defects that decide a whole file's fate; a file gets at most one of them.
DESTRUCTIVE_FILE_DEFECTS = (
    "unmarked",
    "marker_rows",
    "marker_checksum",
    "truncated",
    "bad_encoding",
    "broken_parquet",
    "missing_column",
)
FILE_DEFECTS = ("reextract", "extra_column", *DESTRUCTIVE_FILE_DEFECTS)

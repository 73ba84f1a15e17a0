"""Reconciliation of the load ledger: every row of every marked file accounted for."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import duckdb

from data_contracts import Contract
from orchestration.ingest import landing as lz
from orchestration.ingest.loader import STATUSES


def ledger_problems(con: duckdb.DuckDBPyConnection, contract: Contract) -> list[str]:
    """Files whose marker rows ≠ rows loaded + rows quarantined, or whose ledger counts differ
    from what ``raw`` and ``ops.quarantine`` actually hold. Empty when all reconcile."""
    rows = con.execute(
        f"""WITH raw_counts AS (
                SELECT _source_file AS f, count(*) AS n FROM {contract.raw_table} GROUP BY 1),
            q_counts AS (
                SELECT source_file AS f, count(*) AS n FROM ops.quarantine
                WHERE extract = ? GROUP BY 1)
            SELECT l.source_file, l.marker_rows, l.rows_loaded, l.rows_quarantined,
                   coalesce(r.n, 0), coalesce(q.n, 0)
            FROM ops.load_ledger l
            LEFT JOIN raw_counts r ON r.f = l.source_file
            LEFT JOIN q_counts q ON q.f = l.source_file
            WHERE l.system = ? AND l.extract = ? AND l.status = 'loaded'
              AND (l.marker_rows <> l.rows_loaded + l.rows_quarantined
                   OR l.rows_loaded <> coalesce(r.n, 0) OR l.rows_quarantined <> coalesce(q.n, 0))
            ORDER BY 1""",
        [contract.name, contract.system, contract.extract],
    ).fetchall()
    problems = [
        f"{f}: marker {m} rows, ledger {lo} loaded + {qu} quarantined, tables hold {rn} + {qn}"
        for f, m, lo, qu, rn, qn in rows
    ]
    strays = con.execute(
        f"""SELECT DISTINCT _source_file FROM {contract.raw_table} WHERE _source_file NOT IN
            (SELECT source_file FROM ops.load_ledger WHERE status = 'loaded') ORDER BY 1"""
    ).fetchall()
    problems += [f"{f}: rows in raw but the file is not recorded as loaded" for (f,) in strays]
    return problems


def unaccounted_files(
    con: duckdb.DuckDBPyConnection, landing: Path, contract: Contract
) -> list[str]:
    """Marked files of the months ingestion has run for (or moved aside) that the ledger does
    not account for. Months not yet asked for are their own partitions' business."""
    rows = con.execute(
        "SELECT source_file, status, period FROM ops.load_ledger WHERE system = ? AND extract = ?",
        [contract.system, contract.extract],
    ).fetchall()
    settled = {f for f, status, _ in rows if status in ("loaded", "duplicate", "rejected")}
    months = {p for _, status, p in rows if p and status != "pending"}
    marked = [
        f.relative
        for f in lz.list_files(landing, contract)
        if f.is_marked and lz.marker_period(f) in (*months, None)
    ]
    marked += lz.rejected_files(landing, contract)
    return sorted(f for f in set(marked) if f not in settled)


def ledger_summary(
    con: duckdb.DuckDBPyConnection, contracts: Sequence[Contract], periods: Sequence[str]
) -> dict:
    """The months ``periods`` ('202510', …) as ingested, across extracts: files by status, rows
    loaded and quarantined, and the extracts each month has no loaded file of (in contract
    order)."""
    where = "period IN (SELECT unnest(?::VARCHAR[]))"
    by_status = {
        status: (files, loaded, quarantined)
        for status, files, loaded, quarantined in con.execute(
            "SELECT status, count(*), coalesce(sum(rows_loaded), 0), "
            f"coalesce(sum(rows_quarantined), 0) FROM ops.load_ledger WHERE {where} GROUP BY 1",
            [list(periods)],
        ).fetchall()
    }
    _, loaded, quarantined = by_status.get("loaded", (0, 0, 0))
    present = set(
        con.execute(
            "SELECT DISTINCT period, system || '__' || extract FROM ops.load_ledger "
            f"WHERE status = 'loaded' AND {where}",
            [list(periods)],
        ).fetchall()
    )
    gaps = {p: [c.name for c in contracts if (p, c.name) not in present] for p in sorted(periods)}
    return {
        "files": {s: by_status.get(s, (0,))[0] for s in STATUSES},
        "rows_loaded": int(loaded),
        "rows_quarantined": int(quarantined),
        "missing": {p: names for p, names in gaps.items() if names},
    }

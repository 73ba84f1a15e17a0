"""What a run leaves behind, in a form two runs can be compared by: the warehouse's tables and
the published files, without what records *when* and *which run*."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import polars as pl

from ml.config import bookkeeping_columns
from orchestration.publish.snapshot import COPIES

# Columns that name a run or a moment, hold a fitted model's own figures, or are the features'
# bookkeeping (inputs_hash hashes sums of doubles, which DuckDB adds up in no fixed order, so one
# or two threads hash the same month differently): they differ between two runs that produce
# the same data.
VOLATILE = bookkeeping_columns() | {
    "run_id",
    "dagster_run_id",
    "trained_run_id",
    "created_at",
    "processed_at",
    "first_seen_at",
    "_loaded_at",
    "source_loaded_at",
    "built_at",
    "staged_at",
    "quarantined_at",
    "artifact_path",
    "artifact_sha256",
    "resolved_at",
    "metrics",
}


def warehouse_tables(warehouse: Path) -> dict[str, pl.DataFrame]:
    """Every table of the built schemas and the ledger, without the volatile columns, in a fixed
    row order."""
    out = {}
    with duckdb.connect(str(warehouse), read_only=True) as con:
        tables = con.execute(
            """SELECT table_schema, table_name FROM information_schema.tables
               WHERE table_type = 'BASE TABLE'
                 AND (table_schema IN ('raw', 'marts', 'ml', 'publish')
                      OR (table_schema = 'ops' AND table_name IN ('load_ledger', 'quarantine')))"""
        ).fetchall()
        for schema, table in tables:
            out[f"{schema}.{table}"] = _stable(
                con.execute(f'SELECT * FROM {schema}."{table}"').pl()
            )
    return out


def published_files(publish_dir: Path) -> dict[str, pl.DataFrame | str | None]:
    """Every file under the publish folder: target lists as frames (run ids dropped), text as
    text; the snapshot and the report by name only (their tables are the warehouse's, their
    report carries the time it was made)."""
    out: dict[str, pl.DataFrame | str | None] = {}
    for path in sorted(p for p in publish_dir.rglob("*") if p.is_file()):
        name = path.relative_to(publish_dir).as_posix()
        if name.startswith(f"{COPIES}/"):
            continue  # the snapshot's two copies: what each holds depends on the runs before
        if path.suffix in (".csv", ".parquet"):
            out[name] = _stable(read_target_list(path))
        elif path.suffix == ".txt":
            out[name] = path.read_text("utf-8")
        else:
            out[name] = None
    return out


def read_target_list(path: Path) -> pl.DataFrame:
    """A published target list, CSV (as text) or Parquet."""
    return pl.read_csv(path, infer_schema=False) if path.suffix == ".csv" else pl.read_parquet(path)


def english_name(column: str) -> str:
    """Published CSV headers are bilingual ("批次 run_id"): the English name is the last word."""
    return column.split(" ")[-1]


def _stable(frame: pl.DataFrame) -> pl.DataFrame:
    frame = frame.drop([c for c in frame.columns if english_name(c) in VOLATILE])
    exact = [c for c, t in frame.schema.items() if not t.is_float()]
    return frame.sort(exact + [c for c in frame.columns if c not in exact])


def same(a: object, b: object) -> bool:
    """Equal; frames with floats within 1e-9 relative, as DuckDB sums doubles in parallel, in no
    fixed order."""
    if not isinstance(a, pl.DataFrame) or not isinstance(b, pl.DataFrame):
        return a == b
    if a.shape != b.shape or a.schema != b.schema:
        return False
    floats = [c for c, t in a.schema.items() if t.is_float()]
    if not a.drop(floats).equals(b.drop(floats)):
        return False
    return all(
        np.allclose(a[c].to_numpy(), b[c].to_numpy(), rtol=1e-9, atol=1e-9, equal_nan=True)
        for c in floats
    )


def differences(before: dict, after: dict, ignore: frozenset[str] = frozenset()) -> list[str]:
    """The names whose content differs, or that only one side has."""
    names = (set(before) | set(after)) - ignore
    return sorted(
        n for n in names if n not in before or n not in after or not same(before[n], after[n])
    )


def text_columns_matching(databases: list[Path], pattern: str) -> list[str]:
    """``file: schema.table.column`` of every text column of the databases' tables holding a
    value that matches ``pattern``. Views are left out: they only recompute their tables. Each
    distinct value is gathered first, so the (long) pattern is compiled for one query."""
    con = duckdb.connect()
    try:
        con.execute("CREATE TABLE stored(source VARCHAR, v VARCHAR)")
        for db in databases:
            con.execute(f"ATTACH '{db}' AS db (READ_ONLY)")
            columns = con.execute(
                """SELECT c.schema_name, c.table_name, c.column_name FROM duckdb_columns() c
                   JOIN duckdb_tables() t USING (database_name, schema_name, table_name)
                   WHERE c.database_name = 'db' AND c.data_type IN ('VARCHAR', 'JSON')"""
            ).fetchall()
            if len(columns) < 10:
                raise AssertionError(f"{db}: only {len(columns)} text columns, is it built?")
            for s, t, c in columns:
                con.execute(
                    f'INSERT INTO stored SELECT DISTINCT ?, "{c}"::VARCHAR FROM db."{s}"."{t}"',
                    [f"{db.name}: {s}.{t}.{c}"],
                )
            con.execute("DETACH db")
        rows = con.execute(
            "SELECT DISTINCT source FROM stored WHERE regexp_matches(v, ?) ORDER BY 1", [pattern]
        ).fetchall()
    finally:
        con.close()
    return [source for (source,) in rows]

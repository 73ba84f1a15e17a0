"""The analyst snapshot: a read-only copy of the warehouse's shareable schemas.

Analysts query ``PUBLISH_DIR/analytics.duckdb`` and never hold a lock on the live warehouse.
That name is a symbolic link to one of two copies (``.analytics/a.duckdb`` and ``b.duckdb``).
A run brings the copy the name does *not* point at up to date and then moves the link in one
rename, so a reader opens either the previous snapshot or the new one, never a half-written
file, and a reader still holding the previous one keeps it.

Bringing a copy up to date rewrites only what changed. Each copy has a list of fingerprints
beside it: per table, its columns and, per month of its first date column (or for the whole
table), the rows and a sum of row hashes. A run fingerprints the warehouse's tables, compares,
and replaces only the months that differ. At 100,000 accounts the monthly increment changes a
few of the daily energy's 25 months, where copying all 72 M rows took 23–36 s of CPU.

The big tables (``FILE_ROWS`` rows or more, with a date column) are not held in the copies
at all but as one Parquet file per month in ``.analytics/months``, named by the month's
fingerprint and shared by both copies, in which such a table is a view over its files. A month
is written once, when its content first appears: without that, the second copy ever (the
second run) wrote every month of them again, 45 s of the 100k increment's 70 s of publishing.

A table's dbt model may declare what a row hash takes (``meta.snapshot_fingerprint``, see
``RowHash``) where hashing whole rows costs more than it must: every column but those its view
computes from the others, or the stamp of the build that wrote the row, where every writer sets
one (the load profile's lists: 1.1 s a run at 100,000 accounts against 0.02 s), with what a
view joins to the rows (the daily energy's stamp and archive lookup: 0.6 s, against 1.9–3.2 s
for every column but its month and is_clean, and 4.9 s for whole rows).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import duckdb

from orchestration.publish.files import replaced

# Schemas analysts may see. raw, ops and staging keep lineage, quarantined records and free
# text, so they stay in the warehouse.
SHARED_SCHEMAS = ("marts", "ml", "publish")
SNAPSHOT_NAME = "analytics.duckdb"
COPIES = ".analytics"  # folder of the two copies, beside the name
COPY_NAMES = ("a.duckdb", "b.duckdb")
MONTH_FILES = "months"  # folder in COPIES of the big tables' month files
# From this many rows a table with a date column is kept as month files: 72 M days of energy,
# 6.5 M days of load profiles and the 2.4 M customer-months of the features and scores at
# 100,000 accounts. A smaller table costs less to copy than a view over files costs readers.
FILE_ROWS = 1_000_000

# The most memory a snapshot's DuckDB takes (less where DUCKDB_MEMORY_LIMIT is lower). It
# copies, hashes and writes rows as they stream, and needs little; given the platform's 4 GiB
# it held all of it, and the Parquet writers' buffers, outside DuckDB's limit, took the first
# snapshot of 100,000 accounts to 4.9 GiB, the peak of a whole run (6,042 MiB at 003ebaa, over
# 6 GiB once). At 1 GiB it peaked at 1.7 GiB in the same time.
SNAPSHOT_MEMORY = "1GiB"

WHOLE_ROW = "row"  # the basis of a fingerprint that hashes whole rows

Relation = tuple[str, str]  # (schema, name)


@dataclass(frozen=True)
class SnapshotResult:
    path: Path
    tables: dict[str, int]  # "schema.table" → rows
    bytes: int
    rewritten: dict[str, int]  # "schema.table" → rows written this time (absent: unchanged)
    # "schema.view": the views over the copies, not counted (fct_hourly_load's count unnests
    # the load profile's 6.5 M days at 100,000 accounts, 2.5 s a run)
    views: list[str]


@dataclass(frozen=True)
class Fingerprint:
    """What a copied table holds: its columns, the date column its rows are grouped by (or
    none), per group (``YYYY-MM``; ``""`` for no date) the rows and the sum of row hashes,
    whether the copy holds the rows or reads them from month files (``in_files``), and what a
    row hash hashes (``basis``: the whole row, or the columns declared for it)."""

    columns: str
    partition: str | None
    parts: dict[str, tuple[int, str]]
    in_files: bool = False
    basis: str = WHOLE_ROW

    def record(self) -> dict:
        return {
            "columns": self.columns,
            "partition": self.partition,
            "parts": self.parts,
            "in_files": self.in_files,
            "basis": self.basis,
        }

    @classmethod
    def from_record(cls, record: dict) -> Fingerprint:
        parts = {k: (int(n), str(h)) for k, (n, h) in record["parts"].items()}
        # No default: a copy written before the month files holds the big tables itself, and
        # dropping them from it would leave a file of freed blocks (5 GB at 100k) that DuckDB
        # does not give back. Unreadable, the copy is written anew, small.
        in_files = bool(record["in_files"])
        # A list from before the declared columns hashed whole rows.
        basis = str(record.get("basis", WHOLE_ROW))
        return cls(str(record["columns"]), record["partition"], parts, in_files, basis)

    def rows(self) -> int:
        return sum(n for n, _ in self.parts.values())


@dataclass(frozen=True)
class RowHash:
    """What a table's row hash takes instead of the whole row, as its dbt model declares it
    (``meta.snapshot_fingerprint``): every column but those the view computes from the others
    (``computed``), or the stamp of the build that wrote the row (``stamp``), where every
    writer sets one, with the columns a view joins to those rows from other tables, which
    change while the rows stay as written (``joined``). Declared by what it leaves out, a
    column added later is hashed."""

    computed: tuple[str, ...] = ()
    stamp: str | None = None
    joined: tuple[str, ...] = ()

    @property
    def named(self) -> tuple[str, ...]:
        """The columns the declaration names."""
        return (self.stamp, *self.joined) if self.stamp else self.computed

    def columns(self, relation: str, present: Sequence[str]) -> tuple[str, ...]:
        """The columns to hash of ``relation``, which has the columns ``present``."""
        named = self.named
        if missing := [name for name in named if name not in present]:
            raise RuntimeError(f"{relation} has no column {missing} to fingerprint it by")
        return named if self.stamp else tuple(c for c in present if c not in self.computed)


def month_file(
    folder: Path, name: str, part: str, rows: int, checksum: str, basis: str = WHOLE_ROW
) -> Path:
    """Where a month (``part``) of table ``name`` with this fingerprint is kept: the name
    changes with the content, so a file once written is never written over. A checksum of
    declared columns names its basis too: the same values of those columns are other rows
    under other columns or read through another view."""
    tag = "" if basis == WHOLE_ROW else "-" + hashlib.sha256(basis.encode()).hexdigest()[:12]
    return folder / MONTH_FILES / name / f"{part or 'undated'}-{rows}-{checksum}{tag}.parquet"


def fingerprint_basis(hashed: Sequence[str], columns: str, view_sql: str | None = None) -> str:
    """What a table's row hashes hash: the whole row (no ``hashed`` columns), or those
    columns, with the table's ``columns`` and the definition of the view it is, which change
    what its rows hold while the hashed columns stay as they were."""
    if not hashed:
        return WHOLE_ROW
    basis = f"hash({', '.join(hashed)}) of ({columns})"
    if view_sql is not None:
        basis += " view " + hashlib.sha256(view_sql.encode()).hexdigest()
    return basis


def shared_tables(
    con: duckdb.DuckDBPyConnection, catalog: str
) -> list[tuple[str, str, str | None]]:
    """The shared schemas' tables and views: (schema, name, view SQL or None)."""
    return con.execute(
        f"""SELECT t.table_schema, t.table_name, v.sql
            FROM information_schema.tables AS t
            LEFT JOIN duckdb_views() AS v ON v.database_name = t.table_catalog
                AND v.schema_name = t.table_schema AND v.view_name = t.table_name
            WHERE t.table_catalog = ? AND t.table_type IN ('BASE TABLE', 'VIEW')
              AND t.table_schema IN ({", ".join("?" * len(SHARED_SCHEMAS))})
            ORDER BY 1, 2""",
        [catalog, *SHARED_SCHEMAS],
    ).fetchall()


def _local_view_sql(sql: str, catalog: str) -> str:
    """A warehouse view's ``CREATE VIEW`` with the warehouse's catalog left out of the names it
    reads: in the snapshot they then resolve to the snapshot's own copies (DuckDB binds a view
    in the catalog that holds it, whatever name the file is attached under)."""
    return re.sub(rf'(?<![\w."]){re.escape(catalog)}\.|"{re.escape(catalog)}"\.', "", sql)


def write_snapshot(
    warehouse: Path,
    publish_dir: Path,
    config: dict[str, str | int] | None = None,
    file_rows: int = FILE_ROWS,
    declared: Mapping[str, RowHash] | None = None,
) -> SnapshotResult:
    """Bring the copy ``publish_dir/analytics.duckdb`` does not point at up to date with the
    shared schemas of ``warehouse``, then point the name at it. ``config`` is its connection's
    DuckDB config: the asset gives the platform's, its memory limit at most ``SNAPSHOT_MEMORY``
    (without a limit a whole copy of 100,000 accounts' marts peaked at 14.5 GiB). Tables of
    ``file_rows`` rows or more with a date column are kept as month files. ``declared`` maps a
    table (``schema.table``) to what its row hashes take instead of the whole row."""
    final = publish_dir / SNAPSHOT_NAME
    folder = publish_dir / COPIES
    folder.mkdir(parents=True, exist_ok=True)
    current = _pointed_at(final, folder)
    target = folder / COPY_NAMES[1 if current == folder / COPY_NAMES[0] else 0]
    known = _prepare(target)
    try:
        con = duckdb.connect(str(target), config=config or {})
    except duckdb.IOException:
        # An analyst still has this copy open from two runs ago: start a new file under the
        # name; the reader keeps the old one until it closes.
        target.unlink()
        known = _prepare(target)
        con = duckdb.connect(str(target), config=config or {})
    with con:
        counts, views, prints, rewritten = _update(
            con, warehouse, known, folder, file_rows, declared or {}
        )
        con.execute("CHECKPOINT")
    if not counts:
        raise RuntimeError(f"{warehouse} has no tables in {SHARED_SCHEMAS}: nothing to share")
    _write_fingerprints(target, prints)
    os.chmod(target, 0o444)  # read-only for everyone: analysts read, the pipeline replaces
    with replaced(final) as link:
        link.symlink_to(target.relative_to(publish_dir))
    files = _month_files(folder, prints)
    other = folder / COPY_NAMES[0 if target.name == COPY_NAMES[1] else 1]
    _remove_month_files_but(folder, files, other)
    size = target.stat().st_size + sum(path.stat().st_size for path in files)
    return SnapshotResult(final, counts, size, rewritten, views)


def _pointed_at(final: Path, folder: Path) -> Path | None:
    """The copy the name links to; None for no snapshot yet, or a whole file (written before
    there were two copies)."""
    if not final.is_symlink():
        return None
    target = (final.parent / os.readlink(final)).resolve()
    return target if target.parent == folder.resolve() and target.exists() else None


def _fingerprint_path(copy: Path) -> Path:
    return copy.with_suffix(".fingerprints.json")


def read_fingerprints(copy: Path) -> dict[str, Fingerprint] | None:
    try:
        records = json.loads(_fingerprint_path(copy).read_text("utf-8"))
        return {name: Fingerprint.from_record(r) for name, r in records.items()}
    except (OSError, ValueError, KeyError, TypeError):
        return None  # no list, or one this code cannot read: the copy is rewritten whole


def _write_fingerprints(copy: Path, prints: dict[str, Fingerprint]) -> None:
    path = _fingerprint_path(copy)
    with replaced(path) as tmp:
        tmp.write_text(json.dumps({k: v.record() for k, v in prints.items()}), "utf-8")


def _prepare(target: Path) -> dict[str, Fingerprint]:
    """Make ``target`` writable and return what it holds. Its fingerprints are removed first:
    a run that dies while updating it leaves a copy of unknown content, which the next run
    writes whole. So is a copy that does not exist yet (the first two runs). Starting it as a
    file copy of the other was tried: on a slow day for this disk (60 MB/s uncached) the 5 GB
    copy made the 100k increment's snapshot 206 s, against about 75 s for a whole write."""
    known = read_fingerprints(target) if target.exists() else None
    _fingerprint_path(target).unlink(missing_ok=True)
    if known is None:
        target.unlink(missing_ok=True)
        Path(f"{target}.wal").unlink(missing_ok=True)
        return {}
    os.chmod(target, 0o644)
    return known


def _month_files(folder: Path, prints: dict[str, Fingerprint]) -> set[Path]:
    """The month files the tables of these fingerprints read."""
    return {
        month_file(folder, name, part, rows, checksum, fingerprint.basis)
        for name, fingerprint in prints.items()
        if fingerprint.in_files
        for part, (rows, checksum) in fingerprint.parts.items()
    }


def _remove_month_files_but(folder: Path, keep: set[Path], other: Path) -> None:
    """Remove the month files neither copy reads (and those a killed run left half written).
    While the other copy's fingerprints cannot be read, what it reads is unknown: keep all."""
    theirs = read_fingerprints(other) if other.exists() else {}
    if theirs is None:
        return
    keep = keep | _month_files(folder, theirs)
    for path in [*(folder / MONTH_FILES).glob("*/*"), *(folder / MONTH_FILES).glob(".*")]:
        if path.is_dir():  # a killed run's staging folder
            shutil.rmtree(path, ignore_errors=True)
        elif path not in keep:
            path.unlink(missing_ok=True)
    for table in (folder / MONTH_FILES).glob("*"):
        if table.is_dir() and not any(table.iterdir()):
            table.rmdir()


def _update(
    con: duckdb.DuckDBPyConnection,
    warehouse: Path,
    known: dict[str, Fingerprint],
    folder: Path,
    file_rows: int,
    declared: Mapping[str, RowHash],
) -> tuple[dict[str, int], list[str], dict[str, Fingerprint], dict[str, int]]:
    """Make the connection's database hold the warehouse's shared schemas; return the rows of
    every table, the views, the tables' fingerprints and the rows rewritten per table."""
    # Attached under the name DuckDB gives it, as when dbt opened it: the catalog in which
    # dbt's views name the tables they read.
    con.execute(f"ATTACH '{warehouse}' (READ_ONLY)")
    (catalog,) = con.execute(
        "SELECT database_name FROM duckdb_databases() "
        "WHERE NOT internal AND database_name <> current_database()"
    ).fetchone()
    relations = shared_tables(con, catalog)
    views = {(s, t): _local_view_sql(sql, catalog) for s, t, sql in relations if sql is not None}
    tables = [(s, t) for s, t, sql in relations if sql is None]
    # A view over shared tables stays a view over their copies (fct_hourly_load: 155 M rows at
    # 100,000 accounts, 24 s to copy, unnested from its profile's 6.5 M days on reading); a
    # view reading what is not shared (fct_daily_energy reads intermediate) is copied.
    local = _views_binding_on(con, catalog, tables, views)
    copied = sorted(tables + [key for key in views if key not in local])
    unknown = set(declared) - {f"{schema}.{table}" for schema, table in copied}
    if unknown:
        raise RuntimeError(
            f"{sorted(unknown)}: declared snapshot_fingerprint, but the snapshot copies no "
            f"such table of {warehouse} (its copied tables: {[f'{s}.{t}' for s, t in copied]})"
        )

    held = _drop_all_but(con, set(copied))
    for schema in sorted({schema for schema, _ in copied} | {schema for schema, _ in local}):
        con.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    counts: dict[str, int] = {}
    prints: dict[str, Fingerprint] = {}
    rewritten: dict[str, int] = {}
    for schema, table in copied:
        name = f"{schema}.{table}"
        old = known.get(name) if (schema, table) in held else None
        hashing = (declared.get(name), views.get((schema, table)))
        new, written = _bring_up_to_date(
            con, catalog, schema, table, old, folder, file_rows, hashing
        )
        if written:
            rewritten[name] = written
        prints[name] = new
        counts[name] = new.rows()
    con.execute(f'DETACH "{catalog}"')  # views bind on the copies, never on the warehouse
    created = _recreate_views(con, {key: views[key] for key in local})
    if created != set(local):
        raise RuntimeError(f"views that bound on shared tables did not: {set(local) - created}")
    views_held = [f"{schema}.{view}" for schema, view in sorted(local)]
    return dict(sorted(counts.items())), views_held, prints, rewritten


def _views_binding_on(
    con: duckdb.DuckDBPyConnection,
    catalog: str,
    tables: list[Relation],
    views: dict[Relation, str],
) -> list[Relation]:
    """The views that bind on the shared tables (and on each other) alone, found by creating
    them over empty tables of the same columns in a scratch database."""
    if not views:
        return []
    with duckdb.connect() as scratch:
        for schema in sorted({schema for schema, _ in tables} | {schema for schema, _ in views}):
            scratch.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        for schema, table in tables:
            columns = _columns(con, f'"{catalog}"."{schema}"."{table}"')
            scratch.execute(
                f'CREATE TABLE "{schema}"."{table}" ('
                + ", ".join(f'"{name}" {kind}' for name, kind in columns)
                + ")"
            )
        return sorted(_recreate_views(scratch, views))


def _drop_all_but(con: duckdb.DuckDBPyConnection, keep: set[Relation]) -> set[Relation]:
    """Drop every view (they are created again over the copies), every table not kept and
    every schema no longer shared; return the tables kept that the database holds."""
    held: set[Relation] = set()
    for schema, view in con.execute(
        "SELECT schema_name, view_name FROM duckdb_views() "
        "WHERE NOT internal AND database_name = current_database()"
    ).fetchall():
        con.execute(f'DROP VIEW IF EXISTS "{schema}"."{view}" CASCADE')
    for schema, table in con.execute(
        "SELECT schema_name, table_name FROM duckdb_tables() "
        "WHERE database_name = current_database()"
    ).fetchall():
        if (schema, table) in keep:
            held.add((schema, table))
        else:
            con.execute(f'DROP TABLE "{schema}"."{table}" CASCADE')
    for (schema,) in con.execute(
        "SELECT schema_name FROM duckdb_schemas() WHERE database_name = current_database() "
        "AND NOT internal"
    ).fetchall():
        if schema not in {s for s, _ in keep} | set(SHARED_SCHEMAS) and schema != "main":
            con.execute(f'DROP SCHEMA "{schema}" CASCADE')
    return held


def _columns(con: duckdb.DuckDBPyConnection, relation: str) -> list[tuple[str, str]]:
    """A relation's columns: (name, type)."""
    described = con.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()
    return [(name, kind) for name, kind, *_ in described]


def _shape(columns: list[tuple[str, str]]) -> tuple[str, str | None]:
    """Of a relation's columns (``_columns``): their names and types, as text, and the first
    date column, if any."""
    text = ", ".join(f"{name} {kind}" for name, kind in columns)
    return text, next((name for name, kind in columns if kind == "DATE"), None)


def _fingerprint(
    con: duckdb.DuckDBPyConnection,
    relation: str,
    shape: tuple[str, str | None],
    hashed: tuple[str, ...] = (),
    basis: str = WHOLE_ROW,
) -> Fingerprint:
    """``relation``'s fingerprint; ``shape`` is its columns and date column (``_shape``),
    ``hashed`` the columns a row hash takes (none: the whole row), ``basis`` what it hashes
    (``fingerprint_basis``)."""
    columns, partition = shape
    row = "hash(" + ", ".join(f'"{name}"' for name in hashed) + ")" if hashed else "hash(__row)"
    day = f'"{partition}"' if partition else "NULL::DATE"
    # Grouped by the date, then by month, and named as text last: date_trunc or strftime on
    # every row cost more than the hashing (the daily energy's 75 M rows: 4.1 s by month,
    # 3.0 s by date; the sums, and so the fingerprints, are the same). hash(__row) hashes the
    # whole row as a struct (an alias no column is named).
    rows = con.execute(
        f"""SELECT coalesce(strftime(date_trunc('month', day), '%Y-%m'), ''),
                   sum(n)::BIGINT, sum(checksum)::VARCHAR
            FROM (SELECT {day} AS day, count(*) AS n, sum({row}) AS checksum
                  FROM {relation} AS __row GROUP BY ALL)
            GROUP BY ALL"""
    ).fetchall()
    parts = {part: (n, h) for part, n, h in rows}
    return Fingerprint(columns, partition, parts, basis=basis)


def _rows_of(partition: str | None, parts: list[str]) -> str:
    """A condition on the rows of ``parts`` (``YYYY-MM`` or ``""``), as ranges of the date
    column, so that reading them from the warehouse skips the other months' row groups."""
    if partition is None:
        return "true"
    column, ranges = f'"{partition}"', []
    for part in parts:
        if part == "":
            ranges.append(f"{column} IS NULL")
        else:
            first = date.fromisoformat(f"{part}-01")  # raises on anything but a month
            after = date(first.year + first.month // 12, first.month % 12 + 1, 1)
            # Dates on both sides: DATE + INTERVAL is a timestamp, which the zone maps of a
            # date column do not prune on.
            ranges.append(f"({column} >= DATE '{first}' AND {column} < DATE '{after}')")
    return " OR ".join(ranges)


def _bring_up_to_date(
    con: duckdb.DuckDBPyConnection,
    catalog: str,
    schema: str,
    table: str,
    old: Fingerprint | None,
    folder: Path,
    file_rows: int,
    hashing: tuple[RowHash | None, str | None],
) -> tuple[Fingerprint, int]:
    """Rewrite what differs between the copy (as ``old`` describes it; None: the copy does not
    hold the table, or holds it unknown) and the warehouse; return the copy's new fingerprint
    and the rows written. ``hashing``: what the row hashes take (None: whole rows) and the SQL
    of the view the table is (or None)."""
    source, copy = f'"{catalog}"."{schema}"."{table}"', f'"{schema}"."{table}"'
    described = _columns(con, source)
    shape = _shape(described)
    row_hash, view_sql = hashing
    hashed: tuple[str, ...] = ()
    if row_hash is not None:
        hashed = row_hash.columns(source, [name for name, _ in described])
    basis = fingerprint_basis(hashed, shape[0], view_sql)
    new = None
    if shape[1] is not None:
        new = _fingerprint(con, source, shape, hashed, basis)
        if new.rows() >= file_rows and _parquet_keeps(con, source, shape, folder):
            return _in_month_files(con, source, copy, new, folder, f"{schema}.{table}")
    # (A table the copy read from month files is a view there, so it comes with no ``old``.)
    if old is not None and (old.columns, old.partition, old.basis) == (*shape, basis):
        new = new or _fingerprint(con, source, shape, hashed, basis)
        changed = sorted(
            p for p in set(old.parts) | set(new.parts) if old.parts.get(p) != new.parts.get(p)
        )
        # Unless every month differs, as in a table rebuilt whole whose sums of doubles come
        # out in another order (customer_features differs from its previous build by up to
        # 1e-10 kWh in every month): one copy is cheaper than deleting and inserting them all.
        if not (new.parts and set(new.parts) <= set(changed)):
            if changed:
                where = _rows_of(new.partition, changed)
                con.execute(f"DELETE FROM {copy} WHERE {where}")
                con.execute(f"INSERT INTO {copy} SELECT * FROM {source} WHERE {where}")
            return new, sum(new.parts[p][0] for p in changed if p in new.parts)
    con.execute(f"CREATE OR REPLACE TABLE {copy} AS SELECT * FROM {source}")
    if new is None:
        # A table without dates, fingerprinted from the copy, which holds the same rows and
        # columns: a view's copy only has to be read.
        new = _fingerprint(con, copy, shape, hashed, basis)
    return new, new.rows()


def _parquet_keeps(
    con: duckdb.DuckDBPyConnection, source: str, shape: tuple[str, str | None], folder: Path
) -> bool:
    """Whether ``source``'s columns read back from Parquet as they are: a HUGEINT (what
    ``sum`` of integers gives) comes back a DOUBLE, an ENUM a VARCHAR. Such a table stays a
    table in the copies."""
    probe = folder / MONTH_FILES / f".probe.{os.getpid()}.parquet"
    probe.parent.mkdir(parents=True, exist_ok=True)
    try:
        con.execute(f"COPY (SELECT * FROM {source} LIMIT 0) TO {_literal(probe)} (FORMAT parquet)")
        return _shape(_columns(con, f"read_parquet({_literal(probe)})")) == shape
    finally:
        probe.unlink(missing_ok=True)


def _in_month_files(
    con: duckdb.DuckDBPyConnection,
    source: str,
    copy: str,
    new: Fingerprint,
    folder: Path,
    name: str,
) -> tuple[Fingerprint, int]:
    """Make ``copy`` a view over ``source``'s month files, writing those not yet written (by
    this copy or the other); return its fingerprint and the rows written."""
    files = {p: month_file(folder, name, p, n, h, new.basis) for p, (n, h) in new.parts.items()}
    missing = sorted(p for p, path in files.items() if not path.exists())
    if missing:
        _write_months(con, source, new.partition, missing, files)
    con.execute(f"DROP TABLE IF EXISTS {copy}")
    # The absolute paths: a view's relative path would be read from wherever the analyst's
    # session runs. Every run writes the view again, so a moved folder mends at the next run.
    paths = ", ".join(_literal(files[part].resolve()) for part in sorted(files))
    con.execute(f"CREATE VIEW {copy} AS SELECT * FROM read_parquet([{paths}])")
    read_back = _shape(_columns(con, copy))
    if read_back != (new.columns, new.partition):  # what _parquet_keeps made sure of
        raise RuntimeError(f"{name} reads back as ({read_back[0]}), not ({new.columns})")
    written = sum(new.parts[part][0] for part in missing)
    return Fingerprint(new.columns, new.partition, new.parts, True, new.basis), written


def _write_months(
    con: duckdb.DuckDBPyConnection,
    source: str,
    partition: str,
    parts: list[str],
    files: dict[str, Path],
) -> None:
    """Write the months ``parts`` of ``source`` to their ``files``, in one pass: a query per
    month read every row of the daily energy's date column 25 times (its rows are in customer
    order), twice as long as the whole write."""
    staging = next(iter(files.values())).parent / f".{os.getpid()}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.parent.mkdir(parents=True, exist_ok=True)
    column = f'"{partition}"'
    try:
        con.execute(
            f"COPY (SELECT *, year({column}) * 100 + month({column}) AS __month FROM {source} "
            f"WHERE {_rows_of(partition, parts)}) TO {_literal(staging)} "
            "(FORMAT parquet, COMPRESSION zstd, PARTITION_BY (__month))"
        )
        written = {}
        for folder in staging.iterdir():
            key = folder.name.removeprefix("__month=")
            part = "" if key == "__HIVE_DEFAULT_PARTITION__" else f"{key[:4]}-{key[4:]}"
            (written[part],) = folder.iterdir()  # one file per month unless told otherwise
        if sorted(written) != parts:
            raise RuntimeError(f"{source}: wrote the months {sorted(written)}, not {parts}")
        for part, path in written.items():
            path.chmod(0o444)
            os.replace(path, files[part])
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _literal(path: Path) -> str:
    """A path as an SQL string literal."""
    return "'" + str(path).replace("'", "''") + "'"


def _recreate_views(con: duckdb.DuckDBPyConnection, views: dict[Relation, str]) -> set[Relation]:
    """Create the views that bind on what the database holds, a view over another view after
    it; return those created."""
    created: set[Relation] = set()
    while True:
        progress = False
        for key, sql in views.items():
            if key in created:
                continue
            try:
                con.execute(sql)
            except (duckdb.CatalogException, duckdb.BinderException):
                continue  # reads a relation the database has not (yet)
            created.add(key)
            progress = True
        if not progress:
            return created

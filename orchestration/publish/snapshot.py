"""The analyst snapshot: a read-only copy of the warehouse's shareable schemas, replaced whole.

Analysts query ``PUBLISH_DIR/analytics.duckdb`` and never hold a lock on the live warehouse.
The copy is written to a temporary file beside it and moved into place in one rename, so a
reader opens either the previous snapshot or the new one, never a half-written file.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import duckdb

from orchestration.publish.files import replaced

# Schemas analysts may see. raw, ops and staging keep lineage, quarantined records and free
# text, so they stay in the warehouse.
SHARED_SCHEMAS = ("marts", "ml", "publish")
SNAPSHOT_NAME = "analytics.duckdb"


@dataclass(frozen=True)
class SnapshotResult:
    path: Path
    tables: dict[str, int]  # "schema.table" → rows
    bytes: int


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
    warehouse: Path, publish_dir: Path, config: dict[str, str | int] | None = None
) -> SnapshotResult:
    """Copy the shared schemas of ``warehouse`` into ``publish_dir/analytics.duckdb`` with the
    platform's DuckDB ``config`` (its memory limit: without it the copy of 100,000 accounts'
    marts peaked at 14.5 GiB)."""
    final = publish_dir / SNAPSHOT_NAME
    counts: dict[str, int] = {}
    with replaced(final) as tmp:
        # The new file is the connection's own database; the warehouse is only read.
        with duckdb.connect(str(tmp), config=config or {}) as con:
            # Attached under the name DuckDB gives it, as when dbt opened it: the catalog in
            # which dbt's views name the tables they read.
            con.execute(f"ATTACH '{warehouse}' (READ_ONLY)")
            (catalog,) = con.execute(
                "SELECT database_name FROM duckdb_databases() "
                "WHERE NOT internal AND database_name <> current_database()"
            ).fetchone()
            relations = shared_tables(con, catalog)
            for schema in sorted({schema for schema, _, _ in relations}):
                con.execute(f'CREATE SCHEMA "{schema}"')
            for schema, table, view_sql in relations:
                if view_sql is None:
                    _copy(con, catalog, schema, table)
            # A view over shared tables stays a view over their copies (fct_hourly_load: 155 M
            # rows at 100,000 accounts, 24 s to copy, unnested from its profile's 6.5 M days on
            # reading). Tried with the warehouse detached, so that nothing resolves there; a
            # view reading what is not shared (fct_daily_energy reads intermediate) is copied.
            views = {(s, t): sql for s, t, sql in relations if sql is not None}
            con.execute(f'DETACH "{catalog}"')
            kept = _recreate_views(con, {k: _local_view_sql(v, catalog) for k, v in views.items()})
            if len(kept) < len(views):
                con.execute(f"ATTACH '{warehouse}' (READ_ONLY)")
                for schema, table in sorted(set(views) - kept):
                    _copy(con, catalog, schema, table)
                con.execute(f'DETACH "{catalog}"')
            for schema, table, _ in relations:
                counts[f"{schema}.{table}"] = con.execute(
                    f'SELECT count(*) FROM "{schema}"."{table}"'
                ).fetchone()[0]
            con.execute("CHECKPOINT")
        if not counts:
            raise RuntimeError(f"{warehouse} has no tables in {SHARED_SCHEMAS}: nothing to share")
        os.chmod(tmp, 0o444)  # read-only for everyone: analysts read, the pipeline replaces
    return SnapshotResult(final, counts, final.stat().st_size)


def _copy(con: duckdb.DuckDBPyConnection, catalog: str, schema: str, table: str) -> None:
    con.execute(
        f'CREATE TABLE "{schema}"."{table}" AS SELECT * FROM "{catalog}"."{schema}"."{table}"'
    )


def _recreate_views(
    con: duckdb.DuckDBPyConnection, views: dict[tuple[str, str], str]
) -> set[tuple[str, str]]:
    """Create the views that bind on what the snapshot holds, a view over another view after
    it; return those created."""
    created: set[tuple[str, str]] = set()
    while True:
        progress = False
        for key, sql in views.items():
            if key in created:
                continue
            try:
                con.execute(sql)
            except (duckdb.CatalogException, duckdb.BinderException):
                continue  # reads a relation the snapshot has not (yet)
            created.add(key)
            progress = True
        if not progress:
            return created

"""The floor for the feature stage: `customer_features` as one DuckDB statement straight from the
raw tables, with no intermediate table, no test and no orchestration in between.

The statement is written out from dbt's own compiled SQL (``dbt compile``): every model on the
path from the raw tables to ``customer_features`` becomes a CTE, in dependency order, so the
floor computes exactly what the platform computes and the comparison measures the platform's
overhead, not a different algorithm. Seeds and the two Python models (the calendar and the
contracts' code values: reference data, no customer rows) are read from the warehouse as tables.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import duckdb

TARGET = "customer_features"
FLOOR_TABLE = "bench.customer_features_floor"
# The exit code of `python bench/floor.py` when DuckDB runs out of memory: the bench then runs
# the floor again with more (bench_pipeline.py, --floor-retry-memory-limit).
OUT_OF_MEMORY = 3


def compile_features(warehouse: Path, target_path: Path) -> dict:
    """dbt's manifest with the compiled SQL of every model ``customer_features`` is built from."""
    # Imported here: the timed floor process imports this module, and Dagster's import would
    # count against the floor.
    from orchestration.assets.warehouse import DBT_PROJECT_DIR, dbt_command

    # --full-refresh: the incremental models' full SQL, not this warehouse's next increment;
    # without the whole builds' month layout (macros/clustering.sql), which computes nothing.
    command = dbt_command(
        warehouse,
        target_path,
        "compile",
        "--quiet",
        "--full-refresh",
        "--select",
        f"+{TARGET}",
        extra_vars={"lay_out_by_month": False},
    )
    subprocess.run(command, check=True, cwd=DBT_PROJECT_DIR, stdout=subprocess.DEVNULL)
    return json.loads((target_path / "manifest.json").read_text())


def floor_sql(manifest: dict) -> str:
    """One ``CREATE TABLE … AS WITH …`` computing ``customer_features`` from the raw tables."""
    nodes = manifest["nodes"]
    target = next(
        uid for uid, n in nodes.items() if n["resource_type"] == "model" and n["name"] == TARGET
    )
    order: list[str] = []

    def visit(uid: str) -> None:
        node = nodes.get(uid)
        if node is None or uid in order:
            return  # a source: a raw table, read as it is
        for parent in node.get("depends_on", {}).get("nodes", []):
            visit(parent)
        if node["resource_type"] == "model" and node["language"] == "sql":
            order.append(uid)

    visit(target)
    # A model is referred to as "db"."schema"."name" or, in the default database, as
    # "schema"."name"; longest first, so "…stg_a" never replaces the start of "…stg_a_b".
    renames = sorted(
        (
            (form, nodes[u]["name"])
            for u in order
            for form in (nodes[u]["relation_name"], nodes[u]["relation_name"].split(".", 1)[1])
        ),
        key=lambda pair: -len(pair[0]),
    )
    pattern = re.compile("|".join(re.escape(r) for r, _ in renames))
    names = dict(renames)
    ctes = []
    for uid in order:
        body = pattern.sub(lambda m: names[m.group(0)], nodes[uid]["compiled_code"])
        ctes.append(f"{nodes[uid]['name']} as (\n{body.strip().rstrip(';')}\n)")
    return (
        f"create or replace table {FLOOR_TABLE} as\nwith\n"
        + ",\n".join(ctes)
        + f"\nselect * from {TARGET}"
    )


def run_floor(warehouse: Path, sql: str, config: dict[str, str | int] | None = None) -> None:
    """Run the floor's statement with the DuckDB ``config`` the platform's stages use."""
    with duckdb.connect(str(warehouse), config=config or {}) as con:
        con.execute("create schema if not exists bench")
        con.execute(sql)


def main(argv: list[str]) -> int:
    """``python bench/floor.py WAREHOUSE FLOOR.sql``: the floor with the platform's DuckDB
    settings (``DUCKDB_MEMORY_LIMIT`` …), in a process of its own so the bench can time it."""
    from orchestration.settings import Settings

    warehouse, sql = Path(argv[0]), Path(argv[1]).read_text()
    try:
        run_floor(warehouse, sql, Settings.from_env().duckdb_config)
    except duckdb.OutOfMemoryException as error:
        print(f"the floor ran out of memory: {error}", file=sys.stderr)
        return OUT_OF_MEMORY
    return 0


def differing(column: str, numeric: bool = True) -> str:
    """``count(…) as column``: rows of ``x`` and ``y`` whose ``column`` differs; numbers to within
    1e-9 relative (DuckDB sums doubles in parallel, in no fixed order)."""
    test = f"x.{column} is distinct from y.{column}"
    if numeric:
        test += f" and not (abs(x.{column} - y.{column}) <= 1e-9 * greatest(1, abs(x.{column})))"
    return f"count(*) filter (where {test}) as {column}"


def disagreements(
    con: duckdb.DuckDBPyConnection, a: str, b: str, keys: list[str], ignore: Iterable[str] = ()
) -> dict:
    """Rows only in one table, and per column the rows whose values differ (numbers to within
    1e-9 relative: DuckDB sums doubles in parallel, in no fixed order)."""
    columns = con.execute(
        "select column_name, data_type from information_schema.columns "
        "where table_catalog = current_database() and table_schema || '.' || table_name = ? "
        "order by ordinal_position",
        [a],
    ).fetchall()
    on = " and ".join(f"x.{k} = y.{k}" for k in keys)
    counts = {
        "only_in_first": con.execute(
            f"select count(*) from {a} x anti join {b} y on {on}"
        ).fetchone()[0],
        "only_in_second": con.execute(
            f"select count(*) from {b} y anti join {a} x on {on}"
        ).fetchone()[0],
    }
    compared = [(n, kind) for n, kind in columns if n not in keys and n not in ignore]
    tests = [
        differing(name, kind in ("DOUBLE", "FLOAT", "REAL") or kind.startswith("DECIMAL"))
        for name, kind in compared
    ]
    row = con.execute(f"select {', '.join(tests)} from {a} x join {b} y on {on}").fetchone()
    counts["columns"] = {n: v for (n, _), v in zip(compared, row, strict=True) if v}
    return counts


FEATURE_KEYS = ["customer_id", "as_of_month"]  # a row of customer_features


def feature_disagreements(con: duckdb.DuckDBPyConnection, a: str, b: str) -> dict:
    """``disagreements`` of two tables of customer_features on their key, its bookkeeping
    columns aside: ``inputs_hash`` hashes the monthly sums of doubles, which two builds may add
    up in another order."""
    from ml.config import bookkeeping_columns

    return disagreements(con, a, b, FEATURE_KEYS, ignore=bookkeeping_columns())


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main(sys.argv[1:]))

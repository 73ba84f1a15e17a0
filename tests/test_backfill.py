"""A backfill run twice on the same drop: the second changes nothing.

Its own small drop and pipeline, so it runs beside the warehouse module rather than after it
(`make test` distributes tests by file).
"""

import shutil
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import polars as pl
import pytest

from data_contracts import load_contracts
from orchestration.definitions import build_definitions
from orchestration.partitions import landing_months
from orchestration.resources import FinegridResource
from orchestration.runner import run_months
from tests.conftest import PII_KEY, TEST_RATES, make_drop

pytestmark = pytest.mark.slow


VOLATILE = {
    "run_id",
    "dagster_run_id",
    "created_at",
    "processed_at",
    "first_seen_at",
    "_loaded_at",
    "artifact_path",
    "artifact_sha256",
    "resolved_at",
    "metrics",
}


def _tables(warehouse: Path) -> dict[str, pl.DataFrame]:
    """Every table of the built schemas and the ledger, without what records *when* and *which
    run*, in a fixed row order."""
    out = {}
    with duckdb.connect(str(warehouse), read_only=True) as con:
        tables = con.execute(
            """SELECT table_schema, table_name FROM information_schema.tables
               WHERE table_type = 'BASE TABLE'
                 AND (table_schema IN ('raw', 'marts', 'ml', 'publish')
                      OR (table_schema = 'ops' AND table_name = 'load_ledger'))"""
        ).fetchall()
        for schema, table in tables:
            frame = con.execute(f'SELECT * FROM {schema}."{table}"').pl()
            frame = frame.drop([c for c in frame.columns if c in VOLATILE])
            exact = [c for c, t in frame.schema.items() if not t.is_float()]
            out[f"{schema}.{table}"] = frame.sort(
                exact + [c for c in frame.columns if c not in exact]
            )
    return out


def _same(a: pl.DataFrame, b: pl.DataFrame) -> bool:
    """Equal, floats within 1e-9 relative: DuckDB sums doubles in parallel, in no fixed order."""
    if a.shape != b.shape or a.schema != b.schema:
        return False
    floats = [c for c, t in a.schema.items() if t.is_float()]
    if not a.drop(floats).equals(b.drop(floats)):
        return False
    for c in floats:
        x, y = a[c].to_numpy(), b[c].to_numpy()
        if not np.allclose(x, y, rtol=1e-9, atol=1e-9, equal_nan=True):
            return False
    return True


def _resource(root: Path) -> FinegridResource:
    return FinegridResource(
        landing_dir=str(root / "landing"),
        warehouse_path=str(root / "warehouse.duckdb"),
        pii_vault_path=str(root / "vault.duckdb"),
        publish_dir=str(root / "publish"),
        model_dir=str(root / "models"),
    )


def _backfill(root: Path, manifest: Path) -> list[str]:
    """Every month ingested and built, the models and publishing for the last month."""
    defs = build_definitions(manifest, finegrid=_resource(root))
    months = landing_months(root / "landing", load_contracts().values())
    with pytest.MonkeyPatch.context() as mp, dg.instance_for_test() as instance:
        mp.setenv("PII_KEY", PII_KEY)
        outcome = run_months(defs, instance, months, months[-1:])
    assert outcome.success, [r.success for r in outcome.results]
    return months


def test_a_second_backfill_changes_nothing(tmp_path, dbt_manifest):
    drop = make_drop(tmp_path / "drop", accounts=400, months=16, seed=23, rates=TEST_RATES)
    root = tmp_path / "run"
    shutil.copytree(drop.landing, root / "landing")
    months = _backfill(root, dbt_manifest)
    before = _tables(root / "warehouse.duckdb")
    assert _backfill(root, dbt_manifest) == months
    after = _tables(root / "warehouse.duckdb")
    runs = "ml.model_runs"  # each model run is recorded: two more
    assert len(after[runs]) == len(before[runs]) + 2
    assert set(after) == set(before)
    changed = [t for t in before if t != runs and not _same(before[t], after[t])]
    assert not changed
    assert len(before["publish.campaign_targets"]) > 0 and len(before["raw.fin__payment"]) > 0
    assert len(before["ml.customer_segments"]) > 0

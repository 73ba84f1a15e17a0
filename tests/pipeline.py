"""A simulated drop run through the whole platform in-process, for the end-to-end modules.

Each module that needs one builds its own (module fixtures do not cross xdist workers), so the
modules can run side by side: `test_warehouse` checks the run and what it published,
`test_incremental` the incremental models on copies of its warehouse.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest

from data_contracts import load_contracts
from orchestration.definitions import build_definitions
from orchestration.partitions import landing_months
from orchestration.resources import FinegridResource
from orchestration.runner import PipelineOutcome, check_evaluations, run_months
from tests.conftest import PII_KEY, TEST_RATES, Drop, make_drop


@dataclass
class Built:
    drop: Drop
    warehouse: Path
    vault: Path
    outcome: PipelineOutcome
    defs: dg.Definitions
    resource: FinegridResource
    instance: dg.DagsterInstance

    @property
    def evaluations(self) -> list:
        return [e for r in self.outcome.results for e in check_evaluations(r)]

    @property
    def latest(self) -> str:
        return self.outcome.months[-1]

    def sql(self, query: str, params: list | None = None) -> pl.DataFrame:
        with duckdb.connect(str(self.warehouse), read_only=True) as con:
            return con.execute(query, params or []).pl()

    def truth_energy(self) -> pl.DataFrame:
        return pl.read_parquet(self.drop.truth / "monthly_energy.parquet").with_columns(
            pl.date(pl.col("month") // 100, pl.col("month") % 100, 1).alias("energy_month")
        )


@contextmanager
def build_pipeline(root: Path, dbt_manifest: Path, model_months: int) -> Iterator[Built]:
    """18 months of 400 accounts with every defect, ingested and built in one run; then the
    models and publishing for the last ``model_months`` (two: month-to-month changes exist;
    none: the warehouse alone)."""
    drop = make_drop(root / "drop", accounts=400, months=18, seed=11, rates=TEST_RATES)
    landing = root / "landing"
    shutil.copytree(drop.landing, landing)
    warehouse, vault = root / "warehouse.duckdb", root / "vault.duckdb"
    resource = FinegridResource(
        landing_dir=str(landing),
        warehouse_path=str(warehouse),
        pii_vault_path=str(vault),
        publish_dir=str(root / "publish"),
        model_dir=str(root / "models"),
    )
    defs = build_definitions(dbt_manifest, finegrid=resource)
    months = landing_months(landing, load_contracts().values())
    # In memory: nothing here reads Dagster's history back, and the SQLite event log of a
    # temporary instance wrote its ~600 events one by one at ~40 ms each.
    with dg.DagsterInstance.ephemeral() as instance:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("PII_KEY", PII_KEY)
            outcome = run_months(
                defs, instance, months, months[-model_months:] if model_months else []
            )
        yield Built(drop, warehouse, vault, outcome, defs, resource, instance)

"""The Dagster code location: assembles assets, checks and resources; nothing else.

Definitions are built on demand (``@dg.definitions``), so importing this module neither reads
the dbt manifest nor the environment; tests build them against their own manifest.
"""

from pathlib import Path

import dagster as dg

from data_contracts import load_contracts
from orchestration.assets.ingestion import build_ledger_asset, ingestion_assets
from orchestration.assets.models import model_assets
from orchestration.assets.publishing import publishing_assets
from orchestration.assets.warehouse import (
    build_warehouse_assets,
    dbt_resource,
    manifest_path,
    snapshot_fingerprints,
)
from orchestration.automation import (
    build_freshness_checks,
    build_freshness_schedule,
    build_landing_sensor,
    build_month_ready_sensor,
    build_schedules,
    downstream_keys,
    record_failures,
)
from orchestration.resources import FinegridResource

# Dagster's multiprocess executor (a process per step, the writers' pool keeps them from
# colliding), its processes forked from a server that has imported this code location once:
# spawning each step afresh re-imported dbt, scikit-learn and Dagster, ~10 s a step.
EXECUTOR = dg.multiprocess_executor.configured(
    {"start_method": {"forkserver": {"preload_modules": [__name__]}}}
)


def build_definitions(
    manifest: Path | None = None, finegrid: FinegridResource | None = None
) -> dg.Definitions:
    raw_assets = ingestion_assets()
    manifest = manifest or manifest_path()
    warehouse = build_warehouse_assets(manifest)
    ledger = build_ledger_asset(list(load_contracts().values()))
    publishing = publishing_assets(snapshot_fingerprints(manifest))
    assets = [*raw_assets, ledger, *warehouse, *model_assets(), *publishing]
    raw = [k for a in raw_assets for k in a.keys]
    downstream = downstream_keys(assets)
    freshness = build_freshness_checks(load_contracts().values())
    return dg.Definitions(
        assets=assets,
        asset_checks=freshness,
        sensors=[
            build_landing_sensor(raw),
            build_month_ready_sensor(downstream),
            record_failures,
        ],
        schedules=[*build_schedules(raw, downstream), build_freshness_schedule(freshness)],
        resources={"finegrid": finegrid or FinegridResource(), "dbt": dbt_resource()},
        executor=EXECUTOR,
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions()

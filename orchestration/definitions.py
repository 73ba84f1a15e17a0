"""The Dagster code location: assembles assets, checks and resources; nothing else.

Definitions are built on demand (``@dg.definitions``), so importing this module neither reads
the dbt manifest nor the environment; tests build them against their own manifest.
"""

from pathlib import Path

import dagster as dg

from orchestration.assets.ingestion import ingestion_definitions
from orchestration.assets.models import model_assets
from orchestration.assets.publishing import publishing_assets
from orchestration.assets.warehouse import build_warehouse_assets, dbt_resource, manifest_path
from orchestration.resources import FinegridResource


def build_definitions(manifest: Path | None = None) -> dg.Definitions:
    ingestion_assets, ingestion_checks = ingestion_definitions()
    warehouse = build_warehouse_assets(manifest or manifest_path())
    # DuckDB takes one writing process per file: runs execute in one process, so writers never
    # contend for the warehouse lock.
    return dg.Definitions(
        assets=[*ingestion_assets, *warehouse, *model_assets(), *publishing_assets()],
        asset_checks=ingestion_checks,
        resources={"finegrid": FinegridResource(), "dbt": dbt_resource()},
        executor=dg.in_process_executor,
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions()

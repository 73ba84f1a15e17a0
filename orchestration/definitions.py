"""The Dagster code location: assembles assets, checks and resources; nothing else."""

import dagster as dg

from orchestration.assets.ingestion import ingestion_definitions
from orchestration.resources import FinegridResource

_ingestion_assets, _ingestion_checks = ingestion_definitions()

# DuckDB takes one writing process per file: runs execute in one process, so writers never
# contend for the warehouse lock.
defs = dg.Definitions(
    assets=_ingestion_assets,
    asset_checks=_ingestion_checks,
    resources={"finegrid": FinegridResource()},
    executor=dg.in_process_executor,
)

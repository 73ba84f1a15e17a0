"""What analysts and service staff receive. So far: the read-only analyst snapshot."""

import dagster as dg

from orchestration.publish.snapshot import SHARED_SCHEMAS, write_snapshot
from orchestration.resources import FinegridResource

SNAPSHOT = dg.AssetKey(["publish", "analytics_snapshot"])


@dg.asset(
    key=SNAPSHOT,
    deps=[
        dg.AssetKey(["ml", "customer_segments"]),
        dg.AssetKey(["ml", "segment_profiles"]),
        dg.AssetKey(["ml", "risk_scores"]),
    ],
    group_name="publish",
    kinds={"duckdb"},
    description="PUBLISH_DIR/analytics.duckdb: a read-only copy of schemas "
    f"{', '.join(SHARED_SCHEMAS)} (no raw, ops or staging: no lineage, quarantine or free "
    "text), replaced in one rename so analysts never block the pipeline and never see a "
    "half-written file. Downstream of the models, so a failed quality gate leaves the "
    "previous snapshot in place.",
)
def analytics_snapshot(finegrid: FinegridResource) -> dg.MaterializeResult:
    settings = finegrid.settings()
    result = write_snapshot(settings.warehouse_path, settings.publish_dir)
    return dg.MaterializeResult(
        metadata={
            "path": str(result.path),
            "tables": len(result.tables),
            "rows": sum(result.tables.values()),
            "size_mb": round(result.bytes / 2**20, 1),
            "contents": dg.MetadataValue.md(
                "\n".join(f"- `{t}`: {n:,}" for t, n in result.tables.items())
            ),
        }
    )

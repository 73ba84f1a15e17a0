"""What marketing, service staff, management and analysts receive: thin wiring around
``orchestration.publish``.

Tags (all months, with history), service plans, campaign target lists with audited contact
details, the HTML report and the read-only analyst snapshot. Every asset runs after the model
gate's blocking checks, so nothing is published from a model that failed it.
"""

import json
import uuid
from collections.abc import Mapping
from datetime import date

import dagster as dg
import duckdb
import polars as pl

from ml.months import add_month
from orchestration.assets.models import FEATURES, PROFILES, RISK, SEGMENTS, replace_rows
from orchestration.assets.policies import RETRY, RUN_PER_MONTH, WRITER_POOL, pii_key
from orchestration.ingest.pii import attach_vault
from orchestration.partitions import MONTHS, key_month
from orchestration.publish.campaigns import (
    assign_account_managers,
    select_targets,
    write_target_files,
)
from orchestration.publish.contacts import contact_column, resolve_contacts, write_audit
from orchestration.publish.frames import (
    campaign_frame,
    customer_month_fingerprints,
    customer_months,
    table_exists,
)
from orchestration.publish.rules import (
    campaign_fields,
    contact_labels,
    contact_masks,
    default_rules,
    tag_fields,
)
from orchestration.publish.service import customer_plans, plan_frame
from orchestration.publish.snapshot import (
    SHARED_SCHEMAS,
    SNAPSHOT_MEMORY,
    RowHash,
    write_snapshot,
)
from orchestration.publish.tags import (
    TAG_COLUMNS,
    catalogue_frame,
    evaluate_tags,
    extend_tag_history,
    library_digest,
    months_to_evaluate,
    tag_history,
)
from orchestration.resources import FinegridResource

DIM_CUSTOMER = dg.AssetKey(["marts", "dim_customer"])
WORK_ORDERS = dg.AssetKey(["marts", "fct_work_orders"])
TAGS = dg.AssetKey(["publish", "customer_tags"])
TAG_HISTORY = dg.AssetKey(["publish", "customer_tag_history"])
PLANS = dg.AssetKey(["publish", "segment_service_plan"])
CUSTOMER_PLANS = dg.AssetKey(["publish", "customer_service_plan"])
TARGETS = dg.AssetKey(["publish", "campaign_targets"])
REPORT = dg.AssetKey(["publish", "report"])
SNAPSHOT = dg.AssetKey(["publish", "analytics_snapshot"])
# The dbt models of models/publish (KPI and SLA marts), built after the models.
DBT_PUBLISH = [
    dg.AssetKey(["publish", name])
    for name in ("customer_segment_months", "sla_compliance", "kpi_monthly")
]


def replace_table(con: duckdb.DuckDBPyConnection, table: str, frame: pl.DataFrame) -> None:
    """Replace ``table`` with ``frame`` in one statement (readers see the old or the new)."""
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {table.split('.')[0]}")
    con.register("incoming", frame.to_arrow())
    try:
        con.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM incoming")
    finally:
        con.unregister("incoming")


# Publishing runs per as-of month (the month partition), after the models of that month.
PER_MONTH = {"partitions_def": MONTHS, "backfill_policy": RUN_PER_MONTH, "pool": WRITER_POOL}


def _segments_of(con: duckdb.DuckDBPyConnection, month: date) -> int:
    return con.execute(
        "SELECT count(*) FROM ml.customer_segments WHERE as_of_month = ?", [month]
    ).fetchone()[0]


def _evaluated_months(
    con: duckdb.DuckDBPyConnection, digest: str
) -> dict[date, tuple[int, str]] | None:
    """The fingerprints of the rows each month's stored tags were evaluated on; None when the
    tags must be evaluated whole: none stored, or under another library (``digest``)."""
    if not (
        table_exists(con, "ops", "tag_input_months")
        and table_exists(con, "publish", "customer_tags")
    ):
        return None
    found = con.execute(
        "SELECT as_of_month, rows, checksum, library_digest FROM ops.tag_input_months"
    ).fetchall()
    if any(row[3] != digest for row in found):
        return None
    return {month: (rows, checksum) for month, rows, checksum, _ in found}


def _fingerprint_frame(fingerprints: dict[date, tuple[int, str]], digest: str) -> pl.DataFrame:
    return pl.DataFrame(
        [(month, rows, checksum, digest) for month, (rows, checksum) in fingerprints.items()],
        schema={
            "as_of_month": pl.Date,
            "rows": pl.Int64,
            "checksum": pl.String,
            "library_digest": pl.String,
        },
        orient="row",
    )


def _write_tags(
    con: duckdb.DuckDBPyConnection, tags: pl.DataFrame, months: list[date], whole: bool
) -> None:
    """Replace the tags of ``months`` with ``tags`` (all of them when ``whole``)."""
    if whole:
        replace_table(con, "publish.customer_tags", tags)
        return
    columns = ", ".join(TAG_COLUMNS)
    con.execute(
        "DELETE FROM publish.customer_tags WHERE as_of_month IN (SELECT unnest(?::DATE[]))",
        [months],
    )
    con.register("incoming", tags.select(TAG_COLUMNS).to_arrow())
    try:
        con.execute(f"INSERT INTO publish.customer_tags ({columns}) SELECT {columns} FROM incoming")
    finally:
        con.unregister("incoming")


def _tag_history(
    con: duckdb.DuckDBPyConnection,
    tags: pl.DataFrame,
    changed: list[date],
    whole: bool,
    latest: date,
) -> pl.DataFrame:
    """The tag history once the ``tags`` of the ``changed`` months are written: made from
    every month's tags when they were all evaluated (``whole``: ``tags`` is what the table now
    holds; reading its 7.4 M rows back at 100,000 accounts took 9.7 s of the step's 21 s,
    against 2.0 s for the history itself), else the stored history extended from the first
    changed month (reading 7.9 M tags took most of the step's 5.7 s). Nothing changed, it is
    extended from the month after the latest."""
    if whole:
        return tag_history(tags, latest)
    if not table_exists(con, "publish", "customer_tag_history"):
        return tag_history(con.execute("SELECT * FROM publish.customer_tags").pl(), latest)
    first = min(changed) if changed else add_month(latest, 1)
    history = con.execute("SELECT * FROM publish.customer_tag_history").pl()
    recent = con.execute(
        "SELECT * FROM publish.customer_tags WHERE as_of_month >= ?", [add_month(first, -1)]
    ).pl()
    return extend_tag_history(history, recent, first, latest)


def _tags_now(con: duckdb.DuckDBPyConnection, latest: date) -> tuple[int, pl.DataFrame]:
    """How many tags there are, and the ``latest`` month's."""
    (rows,) = con.execute("SELECT count(*) FROM publish.customer_tags").fetchone()
    now = con.execute("SELECT * FROM publish.customer_tags WHERE as_of_month = ?", [latest])
    return rows, now.pl()


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            TAGS,
            deps=[FEATURES, DIM_CUSTOMER, SEGMENTS, RISK],
            group_name="publish",
            kinds={"polars", "duckdb"},
            description="publish.customer_tags: one row per customer, month and tag that holds "
            "(business_rules/tags.yaml), with the figure it rests on; publish.tag_catalogue "
            "lists the library.",
        ),
        dg.AssetSpec(
            TAG_HISTORY,
            deps=[TAGS],
            group_name="publish",
            kinds={"polars", "duckdb"},
            description="publish.customer_tag_history: the months each tag held as intervals "
            "valid_from → valid_to (null while it still holds).",
        ),
    ],
    **PER_MONTH,
)
def customer_tags(context: dg.AssetExecutionContext, finegrid: FinegridResource):
    library = default_rules()["tags"]
    latest = key_month(context.partition_key)
    fields, digest = tag_fields(library), library_digest(library)
    with finegrid.connect(read_only=True) as con:
        # Every month up to the as-of month has its tags, so the history is whole and a month
        # whose models ran later gets its segment and credit tags. Only the months whose rows
        # changed since their tags were evaluated are evaluated again: a new month changes two
        # (at 100,000 accounts the step evaluated 25 months' 2.46 M rows again in each run).
        current = customer_month_fingerprints(con, fields, latest)
        stored = _evaluated_months(con, digest)
        evaluate, drop = months_to_evaluate(stored or {}, current, stored is not None)
        months = customer_months(con, fields, months=evaluate)
    tags = evaluate_tags(months, library)
    catalogue = catalogue_frame(library)
    with finegrid.connect() as con:
        con.execute("BEGIN TRANSACTION")
        try:
            _write_tags(con, tags, evaluate + drop, whole=stored is None)
            con.execute("CREATE SCHEMA IF NOT EXISTS ops")
            con.register("inputs", _fingerprint_frame(current, digest))
            con.execute("CREATE OR REPLACE TABLE ops.tag_input_months AS SELECT * FROM inputs")
            con.unregister("inputs")
            history = _tag_history(con, tags, evaluate + drop, stored is None, latest)
            rows, now = _tags_now(con, latest)
            replace_table(con, "publish.tag_catalogue", catalogue)
            replace_table(con, "publish.customer_tag_history", history)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    counts = (
        now.group_by("tag_code")
        .len()
        .join(catalogue.select("tag_code", "name_zh", "dimension"), on="tag_code", how="right")
    )
    started = history.filter(pl.col("valid_from") == latest).height
    ended = history.filter(pl.col("valid_to") == latest).height
    yield dg.MaterializeResult(
        asset_key=TAGS,
        metadata={
            "as_of_month": str(latest),
            "months_evaluated": len(evaluate),
            "tags_in_library": len(catalogue),
            "rows": rows,
            "customers_tagged_latest": now["customer_id"].n_unique(),
            "library_version": library["version"],
            "latest_month_counts": dg.MetadataValue.md(
                "| tag | 名称 | dimension | customers |\n|---|---|---|---|\n"
                + "\n".join(
                    f"| {r['tag_code']} | {r['name_zh']} | {r['dimension']} | {r['len'] or 0} |"
                    for r in counts.sort("dimension", "tag_code").iter_rows(named=True)
                )
            ),
        },
    )
    yield dg.MaterializeResult(
        asset_key=TAG_HISTORY,
        metadata={
            "intervals": len(history),
            "current": int(history["is_current"].sum()),
            "tags_started_latest_month": started,
            "tags_ended_latest_month": ended,
        },
    )


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            PLANS,
            deps=[SEGMENTS],
            group_name="publish",
            kinds={"duckdb"},
            description="publish.segment_service_plan: each segment's service package "
            "(business_rules/service_plans.yaml): account manager, reports, channels, "
            "response targets.",
        ),
        dg.AssetSpec(
            CUSTOMER_PLANS,
            deps=[PLANS, DIM_CUSTOMER],
            group_name="publish",
            kinds={"polars", "duckdb"},
            description="publish.customer_service_plan: every segmented customer's plan per "
            "scored month, with their account manager and repair-arrival promise.",
        ),
    ],
    **PER_MONTH,
)
def service_plans(context: dg.AssetExecutionContext, finegrid: FinegridResource):
    rules = default_rules()
    plans = plan_frame(rules["service_plans"])
    month = key_month(context.partition_key)
    with finegrid.connect(read_only=True) as con:
        customers = con.execute(
            """SELECT s.customer_id, s.as_of_month, s.segment_code, d.district_code, d.area_type
               FROM ml.customer_segments AS s LEFT JOIN marts.dim_customer AS d USING (customer_id)
               WHERE s.as_of_month = ? ORDER BY s.customer_id""",
            [month],
        ).pl()
    customers = customers.with_columns(
        assign_account_managers(customers, rules["account_managers"])
    )
    per_customer = customer_plans(customers, plans)
    with finegrid.connect() as con:
        replace_table(con, "publish.segment_service_plan", plans)
        replace_rows(con, "publish.customer_service_plan", per_customer, "as_of_month = ?", [month])
    yield dg.MaterializeResult(
        asset_key=PLANS,
        metadata={
            "plans": dg.MetadataValue.md(
                "| segment | plan | account manager | response min |\n|---|---|---|---|\n"
                + "\n".join(
                    f"| {r['segment_code']} | {r['plan_code']} {r['plan_name_zh']} | "
                    f"{'yes' if r['has_account_manager'] else 'no'} | {r['response_minutes']} |"
                    for r in plans.iter_rows(named=True)
                )
            ),
            "version": rules["service_plans"]["version"],
        },
    )
    yield dg.MaterializeResult(
        asset_key=CUSTOMER_PLANS,
        metadata={
            "rows": len(per_customer),
            "with_account_manager": int(per_customer["account_manager_id"].is_not_null().sum()),
        },
    )


TARGET_CHECKS = ("targets_within_capacity", "no_excluded_customer_targeted")


@dg.asset(
    key=TARGETS,
    deps=[TAGS, CUSTOMER_PLANS, WORK_ORDERS],
    group_name="publish",
    kinds={"polars", "duckdb", "parquet"},
    description="publish.campaign_targets for the as-of month (business_rules/"
    "campaigns.yaml): rank, score, reason and channel per customer; with the funnel per "
    "campaign in publish.campaign_runs. Files per campaign and month in PUBLISH_DIR/campaigns "
    "(CSV with a BOM for Excel, and Parquet) carry contact details from the vault — in clear "
    "only where the channel needs them — and every resolution is audited in ops.contact_audit.",
    check_specs=[dg.AssetCheckSpec(name, asset=TARGETS) for name in TARGET_CHECKS],
    retry_policy=RETRY,
    **PER_MONTH,
)
def campaign_targets(context: dg.AssetExecutionContext, finegrid: FinegridResource):
    rules = default_rules()
    settings = finegrid.settings()
    key = pii_key(settings)
    campaigns = rules["campaigns"]
    month = key_month(context.partition_key)
    with finegrid.connect(read_only=True) as con:
        segmented = _segments_of(con, month)
    if not segmented:
        reason = f"no segments for {month}: the models skipped this month or have not run"
        yield dg.MaterializeResult(metadata={"as_of_month": str(month), "skipped": reason})
        for name in TARGET_CHECKS:
            yield dg.AssetCheckResult(
                check_name=name, passed=True, metadata={"evaluated": False, "detail": reason}
            )
        return
    with finegrid.connect(read_only=True) as con:
        frame = campaign_frame(
            con,
            campaign_fields(campaigns),
            month,
            complaint_days=campaigns["recent_complaint_days"],
            cooldown_months=campaigns["contact_cooldown_months"],
        )
    frame = frame.with_columns(assign_account_managers(frame, rules["account_managers"]))
    run_id = f"campaigns-{month:%Y%m}-{uuid.uuid4().hex[:8]}"
    results = [select_targets(frame, c, campaigns, month, run_id) for c in campaigns["campaigns"]]
    masks = contact_masks()
    folder = settings.publish_dir / "campaigns"
    files, audited = [], 0
    vault = duckdb.connect()
    try:
        attach_vault(vault, settings.pii_vault_path, key)
        with finegrid.connect() as con:
            for campaign, result in zip(campaigns["campaigns"], results, strict=True):
                needed = campaigns["channels"][campaign["channel"]]["contact_fields"]
                contacts, audit = resolve_contacts(
                    vault, result.targets["customer_id"].to_list(), needed, masks
                )
                listed = result.targets.join(contacts, on="customer_id", how="left")
                labels = {contact_column(f): label for f, label in contact_labels().items()}
                paths = write_target_files(listed, folder, campaign["code"], month, labels)
                files.extend(paths)
                audited += write_audit(
                    con,
                    audit,
                    run_id=context.run.run_id,
                    campaign=campaign["code"],
                    month=month,
                    output_file=" + ".join(str(p) for p in paths),
                )
    finally:
        vault.close()
    targets = pl.concat([r.targets for r in results])
    runs = pl.DataFrame(
        [
            {
                "campaign_code": r.code,
                "as_of_month": month,
                "run_id": run_id,
                "dagster_run_id": context.run.run_id,
                "channel": c["channel"],
                "name_zh": c["zh"],
                "name_en": c["en"],
                "eligible": r.funnel["eligible"],
                "after_exclusions": r.funnel["after_exclusions"],
                "over_capacity": r.funnel["over_capacity"],
                "targets": r.funnel["targets"],
                "funnel": json.dumps(r.funnel),
                "rules_version": campaigns["version"],
            }
            for c, r in zip(campaigns["campaigns"], results, strict=True)
        ]
    )
    with finegrid.connect() as con:
        replace_rows(con, "publish.campaign_targets", targets, "as_of_month = ?", [month])
        replace_rows(con, "publish.campaign_runs", runs, "as_of_month = ?", [month])
        yield dg.MaterializeResult(
            metadata={
                "as_of_month": str(month),
                "run_id": run_id,
                "targets": len(targets),
                "files": len(files),
                "contact_resolutions_audited": audited,
                "folder": dg.MetadataValue.path(str(folder.resolve())),
                "funnel": dg.MetadataValue.md(_funnel_table(runs)),
            }
        )
        yield from _target_checks(con, targets, frame, campaigns, month)


def _funnel_table(runs: pl.DataFrame) -> str:
    lines = ["| campaign | channel | eligible | after exclusions | over capacity | targets |"]
    lines.append("|---|---|---|---|---|---|")
    for r in runs.iter_rows(named=True):
        lines.append(
            f"| {r['campaign_code']} {r['name_zh']} | {r['channel']} | {r['eligible']} | "
            f"{r['after_exclusions']} | {r['over_capacity']} | {r['targets']} |"
        )
    return "\n".join(lines)


def _target_checks(con, targets: pl.DataFrame, frame: pl.DataFrame, campaigns: dict, month):
    """Re-count the published lists independently of the selection code."""
    over = []
    for c in campaigns["campaigns"]:
        mine = targets.filter(pl.col("campaign_code") == c["code"])
        group = {"district": "district_code", "account_manager": "account_manager_id"}.get(
            c["capacity"]["per"]
        )
        sizes = mine.group_by(group).len() if group else mine.select(pl.len())
        worst = int(sizes["len"].max() or 0)
        if worst > c["capacity"]["limit"]:
            over.append(f"{c['code']}: {worst} > {c['capacity']['limit']}")
    yield dg.AssetCheckResult(
        check_name="targets_within_capacity",
        passed=not over,
        metadata={"over": "; ".join(over) or "none"},
    )
    status = frame.select("customer_id", "status_code")
    joined = targets.join(status, on="customer_id", how="left")
    closed = joined.filter(pl.col("status_code").is_in(["2", "9"]))
    yield dg.AssetCheckResult(
        check_name="no_excluded_customer_targeted",
        passed=closed.is_empty(),
        metadata={"closed_or_suspended_targets": len(closed)},
    )


@dg.asset(
    key=REPORT,
    deps=[TARGETS, PLANS, TAG_HISTORY, PROFILES, *DBT_PUBLISH],
    group_name="publish",
    kinds={"html"},
    description="PUBLISH_DIR/report.html: one self-contained page for management — segment "
    "sizes and profiles, KPI trends, SLA compliance and campaign sizes — as of the month.",
    retry_policy=RETRY,
    **PER_MONTH,
)
def report(context: dg.AssetExecutionContext, finegrid: FinegridResource) -> dg.MaterializeResult:
    # Imported when it runs: matplotlib is 0.3 s of every run process's start otherwise (see
    # orchestration/assets/models.py).
    from orchestration.publish.report import write_report

    settings = finegrid.settings()
    month = key_month(context.partition_key)
    with finegrid.connect(read_only=True) as con:
        if not _segments_of(con, month):
            return dg.MaterializeResult(
                metadata={"as_of_month": str(month), "skipped": f"no segments for {month}"}
            )
        result = write_report(con, settings.publish_dir, month)
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(result.path.resolve())),
            "url": dg.MetadataValue.url(result.path.resolve().as_uri()),
            "charts": result.charts,
            "size_kb": round(result.path.stat().st_size / 1024, 1),
        }
    )


def build_analytics_snapshot(
    declared: Mapping[str, RowHash] | None = None,
) -> dg.AssetsDefinition:
    """The analyst snapshot's asset; ``declared``: per table, what its row hashes take
    (``snapshot_fingerprints`` of the manifest; ``write_snapshot``)."""

    @dg.asset(
        key=SNAPSHOT,
        deps=[
            SEGMENTS,
            PROFILES,
            RISK,
            TAGS,
            TAG_HISTORY,
            PLANS,
            CUSTOMER_PLANS,
            TARGETS,
            *DBT_PUBLISH,
        ],
        group_name="publish",
        kinds={"duckdb"},
        description="PUBLISH_DIR/analytics.duckdb: a read-only copy of schemas "
        f"{', '.join(SHARED_SCHEMAS)} (no raw, ops or staging: no lineage, quarantine, free "
        "text or contact audit). The name links to one of two copies; a run brings the other up "
        "to date, rewriting only the months whose fingerprints changed, and moves the link in one "
        "rename, so analysts never block the pipeline and never see a half-written file. "
        "Downstream of the models and the published tables, so a failed quality gate leaves the "
        "previous snapshot in place.",
        retry_policy=RETRY,
        **PER_MONTH,
    )
    def analytics_snapshot(finegrid: FinegridResource) -> dg.MaterializeResult:
        settings = finegrid.settings()
        result = write_snapshot(
            settings.warehouse_path,
            settings.publish_dir,
            settings.duckdb_config_within(SNAPSHOT_MEMORY),
            declared=declared,
        )
        return dg.MaterializeResult(
            metadata={
                "path": str(result.path),
                "tables": len(result.tables),
                "views": len(result.views),
                "rows": sum(result.tables.values()),
                "size_mb": round(result.bytes / 2**20, 1),
                # Rows copied this time; the rest of the copy was already up to date.
                "rows_rewritten": sum(result.rewritten.values()),
                "contents": dg.MetadataValue.md(
                    "\n".join(
                        [f"- `{t}`: {n:,} rows" for t, n in result.tables.items()]
                        + [f"- `{v}`: a view over the copies" for v in result.views]
                    )
                ),
            }
        )

    return analytics_snapshot


def publishing_assets(
    declared: Mapping[str, RowHash] | None = None,
) -> list[dg.AssetsDefinition]:
    snapshot = build_analytics_snapshot(declared)
    return [customer_tags, service_plans, campaign_targets, report, snapshot]

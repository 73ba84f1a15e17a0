"""Running unattended: the landing sensor, the month-ready sensor, the schedules, freshness
checks and the run-failure alerts.

The chain is explicit rather than declarative automation: a month's downstream work (warehouse
→ models → publishing) must start when every system's file for it has arrived *or* a deadline
has passed with some still missing, and the deadline with its warning is easier to state, test
and read as a sensor than as an automation condition.

Nothing here opens the warehouse except the failure sensor (to record the alert): sensors decide
from the landing zone and from Dagster's own records, so they never wait on a writer's lock.
"""

import hashlib
import json
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import dagster as dg
import duckdb

from data_contracts import Contract, load_contracts
from orchestration.assets.ingestion import ledger_check_keys, raw_key
from orchestration.partitions import MONTHS, MarkedFile, key_month, marked_files, month_key
from orchestration.resources import FinegridResource

TZ = ZoneInfo("Asia/Shanghai")
DUE_HOUR = 8
# A month's downstream chain starts without the missing systems this many days after its end.
DEADLINE_DAYS = 10
ACTIVE = (
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
)


# ── pure helpers ───────────────────────────────────────────────────────────────────────


def month_deadline(month: str, days: int = DEADLINE_DAYS) -> datetime:
    """When a month's chain stops waiting for missing systems: ``days`` after its end."""
    start = key_month(month)
    end = date(start.year + start.month // 12, start.month % 12 + 1, 1)
    return datetime(end.year, end.month, end.day, DUE_HOUR, tzinfo=TZ) + timedelta(days=days)


def due_month(now: datetime, due_day: int) -> str:
    """The latest month whose file should have arrived by ``now``: month M is due at 08:00 on
    ``due_day`` of month M+1 (Asia/Shanghai)."""
    local = now.astimezone(TZ)
    this_month = date(local.year, local.month, 1)
    passed = (local.day, local.hour) >= (due_day, DUE_HOUR)
    back = 1 if passed else 2
    index = this_month.year * 12 + this_month.month - 1 - back
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def contiguous(keys: Sequence[str], order: Sequence[str]) -> list[tuple[str, str]]:
    """``keys`` as (first, last) runs of consecutive partitions in ``order``, so one run with a
    partition range loads exactly them."""
    position = {k: i for i, k in enumerate(order)}
    runs: list[list[str]] = []
    for key in sorted(keys, key=position.__getitem__):
        if runs and position[key] == position[runs[-1][-1]] + 1:
            runs[-1].append(key)
        else:
            runs.append([key])
    return [(r[0], r[-1]) for r in runs]


def group_new_files(files: Iterable[MarkedFile], latest: str | None) -> dict[str, dict]:
    """extract → {month: [files]} for files not seen before. A file whose marker cannot be read
    belongs to no month; it goes with the latest month known, whose run rejects it."""
    grouped: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for f in files:
        month = month_key(f.period) if f.period else latest
        if month:
            grouped[f.extract][month].append(f.relative)
    return grouped


def ingestion_requests(
    pending: dict[str, dict[str, list[str]]],
    contracts: dict[str, Contract],
    order: Sequence[str],
    trigger: str,
    run_key_prefix: str = "",
) -> list[dg.RunRequest]:
    """One run per range of consecutive months, with every extract that has new files in
    exactly that range: a new month of all systems is one run, and no (extract, month) is
    asked for that has nothing new."""
    by_range: dict[tuple[str, str], list[str]] = defaultdict(list)
    files: dict[tuple[str, str], list[str]] = defaultdict(list)
    for extract, by_month in sorted(pending.items()):
        for first, last in contiguous(list(by_month), order):
            by_range[(first, last)].append(extract)
            files[(first, last)] += [
                f for m, fs in by_month.items() if first <= m <= last for f in fs
            ]
    requests = []
    for (first, last), extracts in sorted(by_range.items()):
        digest = hashlib.sha256("\n".join(sorted(files[(first, last)])).encode()).hexdigest()
        requests.append(
            dg.RunRequest(
                run_key=f"{run_key_prefix}{trigger}:{first}:{last}:{digest[:16]}",
                asset_selection=[raw_key(contracts[e]) for e in extracts],
                asset_check_keys=[k for e in extracts for k in ledger_check_keys(contracts[e])],
                tags={
                    "dagster/asset_partition_range_start": first,
                    "dagster/asset_partition_range_end": last,
                    "finegrid/trigger": trigger,
                    "finegrid/ingestion": "1",
                },
            )
        )
    return requests


@dataclass(frozen=True)
class LandingScan:
    requests: list[dg.RunRequest]
    new_months: list[str]
    cursor: str


def scan_landing(
    landing, contracts: dict[str, Contract], cursor: str | None, known_months: Sequence[str]
) -> LandingScan:
    """Run requests for the marked files the cursor has not seen (see ``ingestion_requests``),
    plus the months to add."""
    seen = set(json.loads(cursor)) if cursor else set()
    files = [f for f in marked_files(landing, contracts.values()) if f.relative not in seen]
    months_in_files = {month_key(f.period) for f in files if f.period}
    new_months = sorted(months_in_files - set(known_months))
    order = sorted(set(known_months) | set(new_months))
    latest = order[-1] if order else None
    requests = ingestion_requests(group_new_files(files, latest), contracts, order, "landing")
    cursor_out = json.dumps(sorted(seen | {f.relative for f in files}))
    return LandingScan(requests, new_months, cursor_out)


def unloaded_files(
    instance: dg.DagsterInstance, landing, contracts: dict[str, Contract]
) -> dict[str, dict[str, list[str]]]:
    """extract → {month: files} for marked files whose marker is newer than their month's
    latest ingestion (or whose month was never ingested): what the sweep still has to load."""
    pending: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    loads: dict[tuple[str, str], tuple[int, float] | None] = {}
    for f in marked_files(landing, contracts.values()):
        if not f.period:
            continue
        month = month_key(f.period)
        if (f.extract, month) not in loads:
            loads[(f.extract, month)] = last_load(instance, raw_key(contracts[f.extract]), month)
        load = loads[(f.extract, month)]
        marked_at = (landing / f"{f.relative}.ok").stat().st_mtime
        if load is None or marked_at > load[1]:
            pending[f.extract][month].append(f.relative)
    return pending


# ── sensors ────────────────────────────────────────────────────────────────────────────


def build_landing_sensor(raw: list[dg.AssetKey]) -> dg.SensorDefinition:
    @dg.sensor(
        name="landing_zone",
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        target=raw,
        description="New marked files → ingestion runs for exactly their extracts and months. "
        "The cursor remembers every file it has sent, so nothing is processed twice; files "
        "without their .ok marker are left until marked.",
    )
    def landing_zone(context: dg.SensorEvaluationContext, finegrid: FinegridResource):
        contracts = load_contracts()
        known = context.instance.get_dynamic_partitions(MONTHS.name)
        scan = scan_landing(finegrid.settings().landing_dir, contracts, context.cursor, known)
        if not scan.requests:
            return dg.SkipReason("no new marked file in the landing zone")
        return dg.SensorResult(
            run_requests=scan.requests,
            dynamic_partitions_requests=[MONTHS.build_add_request(scan.new_months)]
            if scan.new_months
            else [],
            cursor=scan.cursor,
        )

    return landing_zone


def downstream_keys(defs_assets: Iterable[dg.AssetsDefinition]) -> list[dg.AssetKey]:
    """Every asset after ingestion: the warehouse, the models and publishing."""
    return sorted(k for a in defs_assets for k in a.keys if k.path[0] != "raw")


@dataclass(frozen=True)
class MonthState:
    month: str
    arrived: dict[str, str | None]  # extract → its latest load of the month, None if none
    busy: bool  # an ingestion run for the month is queued or running


def ready_months(
    states: Sequence[MonthState], triggered: dict[str, str], now: datetime
) -> tuple[list[tuple[str, str, list[str]]], dict[str, str]]:
    """(month, fingerprint, missing extracts) for each month whose chain should start now: every
    system has arrived, or the deadline has passed (the missing ones listed); and the data
    differs from what last triggered it. Returns them with the updated trigger state."""
    ready, state = [], dict(triggered)
    for s in states:
        missing = sorted(e for e, v in s.arrived.items() if v is None)
        if s.busy or len(missing) == len(s.arrived):
            continue
        if missing and now < month_deadline(s.month):
            continue
        fingerprint = hashlib.sha256(
            json.dumps(sorted(s.arrived.items()), default=str).encode()
        ).hexdigest()[:16]
        if state.get(s.month) == fingerprint:
            continue
        ready.append((s.month, fingerprint, missing))
        state[s.month] = fingerprint
    return ready, state


def last_load(
    instance: dg.DagsterInstance, key: dg.AssetKey, month: str
) -> tuple[int, float] | None:
    """(storage id, timestamp) of the latest ingestion of the extract's month, if any."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[month]), limit=1
    ).records
    return (records[0].storage_id, records[0].timestamp) if records else None


def month_states(instance: dg.DagsterInstance, contracts: dict[str, Contract]) -> list[MonthState]:
    """Each known month: which systems have been ingested (by their latest load), and whether
    an ingestion run is still queued or running."""
    busy = bool(
        instance.get_run_records(
            dg.RunsFilter(statuses=list(ACTIVE), tags={"finegrid/ingestion": "1"}), limit=1
        )
    )
    states = []
    for month in instance.get_dynamic_partitions(MONTHS.name):
        arrived = {}
        for name, c in contracts.items():
            load = last_load(instance, raw_key(c), month)
            arrived[name] = str(load[0]) if load else None
        states.append(MonthState(month, arrived, busy))
    return states


def build_month_ready_sensor(downstream: list[dg.AssetKey]) -> dg.SensorDefinition:
    @dg.sensor(
        name="month_ready",
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        target=downstream,
        description="When every system's file for a month has been ingested, or "
        f"{DEADLINE_DAYS} days after the month's end with some missing (a warning names them), "
        "the month's warehouse → models → publishing chain runs. Several months ready at once "
        "(a whole drop) run the chain for the newest; the warehouse is rebuilt whole, and older "
        "as-of months are scored by a backfill.",
    )
    def month_ready(context: dg.SensorEvaluationContext):
        contracts = load_contracts()
        triggered = json.loads(context.cursor) if context.cursor else {}
        now = datetime.now(TZ)
        ready, state = ready_months(month_states(context.instance, contracts), triggered, now)
        if not ready:
            return dg.SkipReason("no month has newly become ready")
        month, fingerprint, missing = max(ready)
        if missing:
            context.log.warning(
                f"{month}: deadline {month_deadline(month):%Y-%m-%d %H:%M} passed without "
                f"{', '.join(missing)}; running without them"
            )
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    run_key=f"month:{month}:{fingerprint}",
                    asset_selection=downstream,
                    partition_key=month,
                    tags={
                        "finegrid/trigger": "month_ready",
                        "finegrid/missing": ",".join(missing) or "none",
                    },
                )
            ],
            cursor=json.dumps(state),
        )

    return month_ready


# ── schedules ──────────────────────────────────────────────────────────────────────────


def build_schedules(
    raw: list[dg.AssetKey], downstream: list[dg.AssetKey]
) -> list[dg.ScheduleDefinition]:
    @dg.schedule(
        name="daily_ingestion_sweep",
        cron_schedule="0 6 * * *",
        execution_timezone="Asia/Shanghai",
        target=raw,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="06:00 every day: ingestion for every extract and month with marked files, "
        "catching what the sensor missed (sensor off, daemon down). Loads are idempotent: a "
        "month with nothing new keeps its data version, so nothing downstream reruns.",
    )
    def daily_ingestion_sweep(context: dg.ScheduleEvaluationContext, finegrid: FinegridResource):
        contracts = load_contracts()
        landing = finegrid.settings().landing_dir
        months = {
            month_key(f.period) for f in marked_files(landing, contracts.values()) if f.period
        }
        # A month the sensor never saw (it was off): add it, so its files can be loaded.
        known = context.instance.get_dynamic_partitions(MONTHS.name)
        if missing := sorted(months - set(known)):
            context.instance.add_dynamic_partitions(MONTHS.name, missing)
            known = context.instance.get_dynamic_partitions(MONTHS.name)
        pending = unloaded_files(context.instance, landing, contracts)
        day = context.scheduled_execution_time.strftime("%Y%m%d")
        requests = ingestion_requests(pending, contracts, known, "sweep", f"{day}:")
        return requests or dg.SkipReason("every marked file has been ingested")

    @dg.schedule(
        name="monthly_segments_and_campaigns",
        cron_schedule="0 2 3 * *",
        execution_timezone="Asia/Shanghai",
        target=downstream,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="02:00 on the 3rd: the warehouse, segmentation, scores, tags and campaigns "
        "for the month just ended (if the month-ready sensor already ran them, this re-run "
        "replaces the month with the same result).",
    )
    def monthly_segments_and_campaigns(context: dg.ScheduleEvaluationContext):
        local = context.scheduled_execution_time.astimezone(TZ)
        index = local.year * 12 + local.month - 2
        month = f"{index // 12:04d}-{index % 12 + 1:02d}"
        if not context.instance.has_dynamic_partition(MONTHS.name, month):
            return dg.SkipReason(f"no data for {month} has landed yet")
        return dg.RunRequest(run_key=f"monthly:{month}", partition_key=month)

    return [daily_ingestion_sweep, monthly_segments_and_campaigns]


# ── freshness ──────────────────────────────────────────────────────────────────────────


def _freshness_check(contract: Contract) -> dg.AssetChecksDefinition:
    key = raw_key(contract)
    due_day = contract.due_day

    @dg.asset_check(
        asset=key,
        name="month_file_on_time",
        description=f"The month's file arrives by 08:00 on day {due_day} of the next month "
        "(the contract's slaProperties availability); warns when late.",
    )
    def _check(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        due = due_month(datetime.now(TZ), due_day)
        have = sorted(context.instance.get_materialized_partitions(key))
        ok = due in have
        return dg.AssetCheckResult(
            passed=ok,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "due_month": due,
                "due_by": f"day {due_day} of the next month, 08:00 Asia/Shanghai",
                "latest_month_ingested": have[-1] if have else "none",
            },
            description=None if ok else f"{due} is late",
        )

    return _check


def build_freshness_checks(contracts: Iterable[Contract]) -> list[dg.AssetChecksDefinition]:
    """One warning check per extract: the month due by now (its contract's availability day)
    has been ingested."""
    return [_freshness_check(c) for c in contracts if c.due_day is not None]


def build_freshness_schedule(checks: list[dg.AssetChecksDefinition]) -> dg.ScheduleDefinition:
    job = dg.define_asset_job(
        "freshness_checks",
        selection=dg.AssetSelection.checks(*checks),
        description="The month_file_on_time checks of every extract.",
    )
    return dg.ScheduleDefinition(
        name="hourly_freshness",
        job=job,
        cron_schedule="15 * * * *",
        execution_timezone="Asia/Shanghai",
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )


# ── failures ───────────────────────────────────────────────────────────────────────────

ALERTS_DDL = """
CREATE TABLE IF NOT EXISTS ops.alerts (
    alerted_at TIMESTAMP,
    run_id VARCHAR,
    job_name VARCHAR,
    partition VARCHAR,
    assets VARCHAR[],
    failed_steps VARCHAR[],
    error VARCHAR
)"""


def record_alert(
    con: duckdb.DuckDBPyConnection,
    *,
    run_id: str,
    job_name: str,
    partition: str | None,
    assets: list[str],
    steps: list[str],
    error: str,
) -> None:
    con.execute("CREATE SCHEMA IF NOT EXISTS ops")
    con.execute(ALERTS_DDL)
    con.execute(
        "INSERT INTO ops.alerts VALUES (now()::TIMESTAMP, ?, ?, ?, ?, ?, ?)",
        [run_id, job_name, partition, assets, steps, error[:4000]],
    )


@dg.run_failure_sensor(
    name="record_failures",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Every failed run → a row in ops.alerts: the run, its assets and partition, "
    "the failed steps and the error.",
)
def record_failures(context: dg.RunFailureSensorContext, finegrid: FinegridResource):
    run = context.dagster_run
    steps = [e.step_key for e in context.get_step_failure_events() if e.step_key]
    errors = [
        e.event_specific_data.error.message.strip()
        for e in context.get_step_failure_events()
        if e.event_specific_data and e.event_specific_data.error
    ]
    error = "\n".join(errors) or (context.failure_event.message or "run failed")
    assets = sorted(k.to_user_string() for k in (run.asset_selection or []))
    # The warehouse may be held by a writer for a moment: wait for it rather than lose the alert.
    for attempt in range(10):
        try:
            with finegrid.connect() as con:
                record_alert(
                    con,
                    run_id=run.run_id,
                    job_name=run.job_name,
                    partition=run.tags.get("dagster/partition")
                    or run.tags.get("dagster/asset_partition_range_start"),
                    assets=assets,
                    steps=steps,
                    error=error,
                )
            return
        except duckdb.IOException:
            time.sleep(min(2**attempt, 30))
    raise RuntimeError(f"could not record the failure of run {run.run_id}: warehouse locked")

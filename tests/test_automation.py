"""Sensors, schedules, freshness checks and failure alerts, evaluated with Dagster's test
contexts against a real landing zone and a real (ephemeral) instance."""

import json
import os
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from data_contracts import load_contracts
from orchestration.assets.ingestion import raw_key
from orchestration.automation import (
    TZ,
    MonthState,
    build_landing_sensor,
    build_month_ready_sensor,
    build_schedules,
    contiguous,
    due_month,
    month_deadline,
    ready_months,
    record_failures,
)
from orchestration.definitions import build_definitions
from orchestration.partitions import MONTHS
from orchestration.resources import FinegridResource

CONTRACTS = load_contracts()
landing_sensor = build_landing_sensor([raw_key(c) for c in CONTRACTS.values()])


@pytest.fixture
def landing(drop, tmp_path) -> Path:
    """Two extracts of the session drop: payments and bills, every month."""
    root = tmp_path / "landing"
    for folder in ("fin/payment", "mkt/monthly_bill"):
        shutil.copytree(drop.landing / folder, root / folder)
    return root


# ── pure helpers ───────────────────────────────────────────────────────────────────────


def test_contiguous_months_make_one_range_and_gaps_split_it():
    order = ["2025-01", "2025-02", "2025-03", "2025-04", "2025-05"]
    assert contiguous(["2025-03", "2025-01", "2025-02", "2025-05"], order) == [
        ("2025-01", "2025-03"),
        ("2025-05", "2025-05"),
    ]
    assert contiguous([], order) == []


def test_a_month_is_due_at_08_00_on_its_contracts_day_of_the_next_month():
    before = datetime(2025, 11, 5, 7, 59, tzinfo=TZ)
    after = datetime(2025, 11, 5, 8, 0, tzinfo=TZ)
    assert due_month(before, 5) == "2025-09"
    assert due_month(after, 5) == "2025-10"
    assert due_month(datetime(2026, 1, 2, 9, tzinfo=TZ), 1) == "2025-12"
    # 00:30 UTC on the 1st is already 08:30 in Wuhan
    assert due_month(datetime(2026, 3, 1, 0, 30, tzinfo=UTC), 1) == "2026-02"
    assert due_month(datetime(2026, 2, 28, 23, 30, tzinfo=UTC), 1) == "2026-01"
    assert month_deadline("2025-12", days=10) == datetime(2026, 1, 11, 8, tzinfo=TZ)


def test_ready_months_wait_for_every_system_or_the_deadline_and_never_twice():
    now = datetime(2025, 11, 3, 12, tzinfo=TZ)  # October's deadline (Nov 10) not yet passed
    complete = MonthState("2025-10", {"a": "1", "b": "2"}, busy=False)
    partial = MonthState("2025-10", {"a": "1", "b": None}, busy=False)
    old_partial = MonthState("2025-08", {"a": "5", "b": None}, busy=False)
    assert ready_months([partial], {}, now)[0] == []
    ready, state = ready_months([complete, old_partial], {}, now)
    assert [(m, missing) for m, _, missing in ready] == [("2025-10", []), ("2025-08", ["b"])]
    assert ready_months([complete, old_partial], state, now)[0] == []  # nothing new
    reloaded = MonthState("2025-10", {"a": "1", "b": "9"}, busy=False)  # a re-extract landed
    assert [m for m, _, _ in ready_months([reloaded], state, now)[0]] == ["2025-10"]
    busy = MonthState("2025-10", {"a": "1", "b": "9"}, busy=True)
    assert ready_months([busy], {}, now)[0] == []
    nothing = MonthState("2025-10", {"a": None, "b": None}, busy=False)
    assert ready_months([nothing], {}, datetime(2026, 6, 1, tzinfo=TZ))[0] == []


# ── the landing sensor ─────────────────────────────────────────────────────────────────


def _sensor_context(instance, landing: Path, cursor: str | None = None):
    return dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={"finegrid": FinegridResource(landing_dir=str(landing))},
    )


def _marked_months(folder: Path) -> set[str]:
    periods = set()
    for marker in folder.glob("*.ok"):
        try:
            period = json.loads(marker.read_text())["period"]
        except (ValueError, KeyError):
            continue  # a broken marker (a simulated defect) names no month
        periods.add(f"{period[:4]}-{period[4:6]}")
    return periods


def _covered(requests, asset: str, order: list[str]) -> list[str]:
    months = []
    for r in requests:
        if asset in {k.to_user_string() for k in r.asset_selection}:
            first = order.index(r.tags["dagster/asset_partition_range_start"])
            last = order.index(r.tags["dagster/asset_partition_range_end"])
            months += order[first : last + 1]
    return months


def test_the_landing_sensor_asks_for_exactly_the_new_files_extracts_and_months(landing, instance):
    result = landing_sensor(_sensor_context(instance, landing))
    added = result.dynamic_partitions_requests[0].partition_keys
    assert added == sorted(added)
    for request in result.run_requests:  # only the ledger checks, not the freshness ones
        assert {k.name for k in request.asset_check_keys} == {
            "ledger_reconciles",
            "no_marked_file_unaccounted",
        }
    for folder, asset in (
        ("fin/payment", "raw/fin__payment"),
        ("mkt/monthly_bill", "raw/mkt__monthly_bill"),
    ):
        expected = _marked_months(landing / folder)
        covered = _covered(result.run_requests, asset, added)
        assert sorted(covered) == sorted(expected), asset  # each month once, no other
    assert set(added) == _marked_months(landing / "fin/payment") | _marked_months(
        landing / "mkt/monthly_bill"
    )
    seen = set(json.loads(result.cursor))
    data_files = {
        f"{p.parent.parent.name}/{p.parent.name}/{p.name}"
        for p in landing.rglob("*")
        if p.is_file() and not p.name.endswith(".ok") and Path(f"{p}.ok").exists()
    }
    assert seen == data_files

    # The same files again: nothing is processed twice.
    instance.add_dynamic_partitions(MONTHS.name, added)
    again = landing_sensor(_sensor_context(instance, landing, result.cursor))
    assert isinstance(again, dg.SkipReason)


def test_unmarked_files_wait_until_marked_and_a_late_file_runs_alone(landing, instance):
    bills = sorted((landing / "mkt/monthly_bill").glob("*.ok"))
    held = bills[len(bills) // 2]
    hidden = held.with_name(held.name + ".held")
    held.rename(hidden)  # the file is still being written: no marker yet
    first = landing_sensor(_sensor_context(instance, landing))
    held_file = f"mkt/monthly_bill/{held.name.removesuffix('.ok')}"
    assert held_file not in json.loads(first.cursor)
    instance.add_dynamic_partitions(
        MONTHS.name, first.dynamic_partitions_requests[0].partition_keys
    )
    bill_ranges = [
        (r.tags["dagster/asset_partition_range_start"], r.tags["dagster/asset_partition_range_end"])
        for r in first.run_requests
        if raw_key(CONTRACTS["mkt__monthly_bill"]) in r.asset_selection
    ]
    assert len(bill_ranges) == 2  # the months before and after the unmarked one

    hidden.rename(held)  # now marked
    second = landing_sensor(_sensor_context(instance, landing, first.cursor))
    assert len(second.run_requests) == 1
    request = second.run_requests[0]
    assert request.asset_selection == [raw_key(CONTRACTS["mkt__monthly_bill"])]
    month = json.loads(held.read_text())["period"]
    key = f"{month[:4]}-{month[4:]}"
    assert request.tags["dagster/asset_partition_range_start"] == key
    assert request.tags["dagster/asset_partition_range_end"] == key
    assert held_file in json.loads(second.cursor)


def test_a_re_extract_of_one_month_asks_for_that_extract_and_month_only(landing, instance):
    first = landing_sensor(_sensor_context(instance, landing))
    instance.add_dynamic_partitions(
        MONTHS.name, first.dynamic_partitions_requests[0].partition_keys
    )
    original = next(
        p for p in sorted((landing / "fin/payment").glob("*.csv")) if Path(f"{p}.ok").exists()
    )
    copy = original.with_name(original.stem + "_01.csv")
    shutil.copy(original, copy)
    shutil.copy(f"{original}.ok", f"{copy}.ok")
    period = json.loads(Path(f"{original}.ok").read_text())["period"]
    second = landing_sensor(_sensor_context(instance, landing, first.cursor))
    assert [
        (r.asset_selection[0].to_user_string(), r.tags["dagster/asset_partition_range_start"])
        for r in second.run_requests
    ] == [("raw/fin__payment", f"{period[:4]}-{period[4:]}")]


# ── the month-ready sensor and the schedules ───────────────────────────────────────────


def _loaded(instance, extracts, month: str) -> None:
    for name in extracts:
        instance.report_runless_asset_event(
            dg.AssetMaterialization(raw_key(CONTRACTS[name]), partition=month)
        )


DOWNSTREAM = [dg.AssetKey(["marts", "customer_features"]), dg.AssetKey(["ml", "risk_scores"])]


def test_month_ready_runs_the_chain_once_every_system_has_arrived(instance):
    month = datetime.now(TZ).strftime("%Y-%m")  # the current month: its deadline is ahead
    instance.add_dynamic_partitions(MONTHS.name, [month])
    sensor = build_month_ready_sensor(DOWNSTREAM)
    names = sorted(CONTRACTS)
    _loaded(instance, names[:-1], month)
    assert isinstance(sensor(dg.build_sensor_context(instance=instance)), dg.SkipReason)
    _loaded(instance, names[-1:], month)
    result = sensor(dg.build_sensor_context(instance=instance))
    (request,) = result.run_requests
    assert request.partition_key == month and request.asset_selection == DOWNSTREAM
    assert request.tags["finegrid/missing"] == "none"
    again = sensor(dg.build_sensor_context(instance=instance, cursor=result.cursor))
    assert isinstance(again, dg.SkipReason)


def test_a_month_past_its_deadline_runs_without_the_missing_systems_with_a_warning(instance):
    instance.add_dynamic_partitions(MONTHS.name, ["2024-01", "2024-02"])
    _loaded(instance, ["fin__payment", "mkt__monthly_bill"], "2024-01")
    _loaded(instance, ["fin__payment"], "2024-02")
    sensor = build_month_ready_sensor(DOWNSTREAM)
    result = sensor(dg.build_sensor_context(instance=instance))
    (request,) = result.run_requests  # both are ready; the chain runs for the newest
    assert request.partition_key == "2024-02"
    assert "mkt__monthly_bill" in request.tags["finegrid/missing"]
    assert set(json.loads(result.cursor)) == {"2024-01", "2024-02"}


@pytest.fixture
def instance():
    """A real instance on disk: schedule contexts need one they can refer to."""
    with dg.instance_for_test() as instance:
        yield instance


def test_the_monthly_schedule_targets_the_month_just_ended(instance):
    raw = [raw_key(c) for c in CONTRACTS.values()]
    sweep, monthly = build_schedules(raw, DOWNSTREAM)
    assert monthly.cron_schedule == "0 2 3 * *" and monthly.execution_timezone == "Asia/Shanghai"
    assert sweep.cron_schedule == "0 6 * * *" and sweep.execution_timezone == "Asia/Shanghai"
    when = datetime(2025, 11, 3, 2, tzinfo=TZ)
    # (contexts as context managers: they open their own instance from the reference)
    with dg.build_schedule_context(instance=instance, scheduled_execution_time=when) as context:
        assert isinstance(monthly(context), dg.SkipReason)
    instance.add_dynamic_partitions(MONTHS.name, ["2025-10"])
    with dg.build_schedule_context(instance=instance, scheduled_execution_time=when) as context:
        assert monthly(context).partition_key == "2025-10"


def test_the_daily_sweep_loads_only_what_no_run_has_loaded(landing, instance):
    raw = [raw_key(c) for c in CONTRACTS.values()]
    sweep, _ = build_schedules(raw, DOWNSTREAM)
    resources = {"finegrid": FinegridResource(landing_dir=str(landing))}
    when = datetime(2025, 11, 4, 6, tzinfo=TZ)
    with dg.build_schedule_context(
        instance=instance, scheduled_execution_time=when, resources=resources
    ) as context:
        first = sweep(context)
    assert {k.path[1] for r in first for k in r.asset_selection} == {
        "fin__payment",
        "mkt__monthly_bill",
    }
    months = instance.get_dynamic_partitions(MONTHS.name)  # the sweep added them
    assert months
    # Everything ingested after the markers were written: nothing left to sweep ...
    time.sleep(0.01)
    for month in months:
        _loaded(instance, ["fin__payment", "mkt__monthly_bill"], month)
    with dg.build_schedule_context(
        instance=instance, scheduled_execution_time=when, resources=resources
    ) as context:
        assert isinstance(sweep(context), dg.SkipReason)
        # ... until a file is marked later than its month's last load.
        marker = sorted((landing / "fin/payment").glob("*.ok"))[-1]
        later = time.time() + 5
        os.utime(marker, (later, later))
        (request,) = sweep(context)
    period = json.loads(marker.read_text())["period"]
    assert request.tags["dagster/asset_partition_range_start"] == f"{period[:4]}-{period[4:]}"


# ── freshness and failures ─────────────────────────────────────────────────────────────


def test_freshness_checks_warn_for_a_late_month_and_pass_for_an_arrived_one(dbt_manifest, instance):
    defs = build_definitions(dbt_manifest)
    due = due_month(datetime.now(TZ), CONTRACTS["fin__payment"].due_day)
    instance.add_dynamic_partitions(MONTHS.name, [due])
    _loaded(instance, ["fin__payment"], due)
    result = defs.resolve_job_def("freshness_checks").execute_in_process(instance=instance)
    evaluations = {
        e.asset_check_evaluation_data.asset_key.path[1]: e.asset_check_evaluation_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }
    assert len(evaluations) == len(CONTRACTS)
    assert evaluations["fin__payment"].passed
    late = evaluations["mkt__monthly_bill"]
    assert not late.passed and late.severity == dg.AssetCheckSeverity.WARN
    assert late.metadata["latest_month_ingested"].value == "none"


def test_a_failed_run_is_recorded_in_ops_alerts(dbt_manifest, tmp_path, monkeypatch, instance):
    monkeypatch.delenv("PII_KEY", raising=False)  # ingestion of the archive needs it: fails
    warehouse = tmp_path / "w.duckdb"
    resource = FinegridResource(
        landing_dir=str(tmp_path / "landing"), warehouse_path=str(warehouse)
    )
    defs = build_definitions(dbt_manifest, finegrid=resource)
    instance.add_dynamic_partitions(MONTHS.name, ["2025-10"])
    key = raw_key(CONTRACTS["mkt__cons_archive"])
    (tmp_path / "landing" / "mkt" / "cons_archive").mkdir(parents=True)
    result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=instance, asset_selection=[key], partition_key="2025-10", raise_on_error=False
    )
    assert not result.success
    run = instance.get_run_by_id(result.run_id)
    failure = next(
        e
        for e in instance.all_logs(result.run_id)
        if e.dagster_event_type == dg.DagsterEventType.RUN_FAILURE
    )
    context = dg.build_run_status_sensor_context(
        sensor_name="record_failures",
        dagster_instance=instance,
        dagster_run=run,
        dagster_event=failure.dagster_event,
        resources={"finegrid": resource},
    ).for_run_failure()
    record_failures(context)
    with duckdb.connect(str(warehouse), read_only=True) as con:
        alerts = con.execute("SELECT run_id, partition, assets, error FROM ops.alerts").fetchall()
    assert len(alerts) == 1
    run_id, partition, assets, error = alerts[0]
    assert run_id == result.run_id and partition == "2025-10"
    assert assets == ["raw/mkt__cons_archive"] and "PII_KEY is not set" in error

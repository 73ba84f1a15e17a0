import shutil

import dagster as dg

from orchestration.definitions import defs
from orchestration.resources import FinegridResource
from tests.conftest import PII_KEY


def test_one_asset_and_two_checks_per_extract():
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {"raw/mkt__cons_archive", "raw/fin__payment", "raw/ami__load_curve"} <= keys
    assert len(keys) == 11
    checks = defs.resolve_asset_graph().asset_check_keys
    assert len(checks) == 22


def test_the_whole_ingestion_materialises_and_its_checks_pass(drop, tmp_path, monkeypatch):
    landing = tmp_path / "landing"
    shutil.copytree(drop.landing, landing)
    monkeypatch.setenv("PII_KEY", PII_KEY)
    resource = FinegridResource(
        landing_dir=str(landing),
        warehouse_path=str(tmp_path / "w.duckdb"),
        pii_vault_path=str(tmp_path / "v.duckdb"),
    )
    job = defs.resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(
        resources={"finegrid": resource}, instance=dg.DagsterInstance.ephemeral()
    )
    assert result.success
    evaluations = [
        e.asset_check_evaluation_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    ]
    assert len(evaluations) == 22 and all(e.passed for e in evaluations)
    materialised = {
        e.asset_key.to_user_string(): e.step_materialization_data.materialization.metadata
        for e in result.all_events
        if e.event_type_value == "ASSET_MATERIALIZATION"
    }
    assert materialised["raw/ami__daily_reading"]["rows_loaded"].value > 5_000
    # Each of the six whole-file defects hits at least one file of the drop.
    assert sum(m["files_rejected"].value for m in materialised.values()) >= 6


def test_a_missing_key_fails_with_a_clear_message(drop, tmp_path, monkeypatch):
    monkeypatch.delenv("PII_KEY", raising=False)
    landing = tmp_path / "landing"
    shutil.copytree(drop.landing / "mkt", landing / "mkt")
    resource = FinegridResource(
        landing_dir=str(landing),
        warehouse_path=str(tmp_path / "w.duckdb"),
        pii_vault_path=str(tmp_path / "v.duckdb"),
    )
    result = dg.materialize(
        [a for a in defs.assets if "mkt__cons_archive" in str(a.key)],
        resources={"finegrid": resource},
        raise_on_error=False,
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "PII_KEY is not set" in str(failure.step_failure_data.error)

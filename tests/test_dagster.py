import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml

from data_contracts import load_contracts
from orchestration.assets.ingestion import LEDGER_KEY
from orchestration.assets.warehouse import (
    DBT_PROJECT_DIR,
    dbt_resource,
    manifest_path,
    stream_until_done,
)
from orchestration.definitions import build_definitions
from orchestration.partitions import MONTHS, landing_months
from orchestration.resources import FinegridResource
from orchestration.runner import RANGE_END, RANGE_START, check_evaluations
from orchestration.settings import ConfigError, Settings, memory_bytes
from tests.conftest import PII_KEY


@pytest.fixture(scope="module")
def defs(dbt_manifest):
    return build_definitions(dbt_manifest)


def _raw_keys(defs: dg.Definitions) -> list[dg.AssetKey]:
    keys = defs.resolve_asset_graph().get_all_asset_keys()
    return [k for k in keys if k.path[0] == "raw"]


def test_one_asset_and_two_checks_per_extract(defs):
    keys = {k.to_user_string() for k in _raw_keys(defs)}
    assert {"raw/mkt__cons_archive", "raw/fin__payment", "raw/ami__load_curve"} <= keys
    assert len(keys) == 11
    checks = [
        c for c in defs.resolve_asset_graph().asset_check_keys if c.asset_key.path[0] == "raw"
    ]
    assert len(checks) == 33  # two ledger checks and the freshness check per extract


def test_a_backfill_by_month_reaches_everything_and_builds_the_warehouse_once(defs):
    """The graph's shape that a UI backfill of everything by month relies on.

    - The ledger depends on every ingestion asset and shares their partitions and backfill
      policy, so it runs with them.
    - Every warehouse asset with no parent in the warehouse (seeds, models reading raw tables)
      depends on it: the unpartitioned warehouse becomes ready at one tick and builds in one run.
    - Dagster targets a partition-name backfill's assets through partitioned assets only, so
      every partitioned asset after ingestion has a partitioned parent."""
    graph = defs.resolve_asset_graph()
    raw = set(_raw_keys(defs))
    ledger = graph.get(LEDGER_KEY)
    assert set(ledger.parent_keys) == raw
    for key in raw:
        assert graph.get(key).partitions_def == ledger.partitions_def
        assert graph.get(key).backfill_policy == ledger.backfill_policy
    layers = ("staging", "intermediate", "marts")
    warehouse = [graph.get(k) for k in graph.get_all_asset_keys() if k.path[0] in layers]
    starts = [n for n in warehouse if not {p.path[0] for p in n.parent_keys} & set(layers)]
    readers = [n for n in warehouse if raw & set(n.parent_keys)]
    assert len(starts) >= 12 and len(readers) >= 11
    for node in [*starts, *readers]:
        assert LEDGER_KEY in node.parent_keys, node.key
    for node in warehouse:
        assert node.partitions_def is None and node.backfill_policy is None, node.key
    later = [
        graph.get(k)
        for k in graph.get_all_asset_keys()
        if k.path[0] not in ("raw", *layers) and k != LEDGER_KEY
    ]
    assert len(later) >= 10
    for node in later:
        assert node.partitions_def is not None, node.key
        assert any(graph.get(p).partitions_def for p in node.parent_keys), node.key


def test_loading_the_definitions_is_quiet_and_leaves_the_models_library_unimported(dbt_manifest):
    """Every Dagster run process loads the definitions; scikit-learn and matplotlib (~1.5 s)
    are imported only by the steps that fit models or draw charts. Loading them warns of
    nothing: every run's log began with sixteen warnings that `backfill_policy` is beta."""
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from orchestration.definitions import build_definitions\n"
        f"build_definitions(Path({str(dbt_manifest)!r}))\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'sklearn', 'matplotlib'}))\n"
    )
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert "Warning" not in done.stderr, done.stderr


def test_importing_the_code_location_reads_no_manifest(monkeypatch):
    """The module declares a loader; the manifest is read only when Dagster asks for it."""
    import orchestration.assets.warehouse as warehouse
    import orchestration.definitions as definitions

    def refuse(*args, **kwargs):
        raise AssertionError("manifest read")

    monkeypatch.setattr(warehouse, "manifest_path", refuse)
    try:
        importlib.reload(definitions)  # raises if the import itself reads the manifest
        with pytest.raises(AssertionError, match="manifest read"):
            definitions.build_definitions()
    finally:
        monkeypatch.undo()
        importlib.reload(definitions)


class _FailingInvocation:
    """A dbt invocation whose events stop with an error, as when an event names a node the
    loaded manifest does not know, while its process still runs."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.process = process
        self.termination_timeout_seconds = 2

    def stream(self):
        yield "first event"
        raise KeyError("test.finegrid.a_test_the_manifest_does_not_know")


@pytest.mark.parametrize("on_interrupt", ["exits", "ignores it"])
def test_dbt_is_stopped_when_its_step_fails_while_it_runs(on_interrupt):
    # Left running, dbt would go on building and hold the warehouse's lock.
    ignore = (
        "signal.signal(signal.SIGINT, signal.SIG_IGN); " if on_interrupt == "ignores it" else ""
    )
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import signal, time; {ignore}print('ready', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "ready"
        events = stream_until_done(_FailingInvocation(child))
        assert next(events) == "first event"
        with pytest.raises(KeyError, match="does_not_know"):
            next(events)
        assert child.poll() is not None
    finally:
        child.kill()
        child.wait()
        child.stdout.close()


def test_a_missing_manifest_says_what_to_run(tmp_path):
    with pytest.raises(ConfigError, match="make setup"):
        manifest_path(tmp_path / "target")


def test_every_platform_connection_opens_with_the_duckdb_settings(tmp_path):
    # Compaction off unless asked for: it rewrote the raw tables at every checkpoint.
    env = {"WAREHOUSE_PATH": str(tmp_path / "w.duckdb"), "DUCKDB_MEMORY_LIMIT": "1GiB"}
    with Settings.from_env(env).connect() as con:
        limit, vacuum, optimizers_off, purging = con.execute(
            "select current_setting('memory_limit'), current_setting('max_vacuum_tasks'), "
            "current_setting('disabled_optimizers'), "
            "current_setting('allocator_background_threads')"
        ).fetchone()
    assert (limit, vacuum) == ("1.0 GiB", 0)
    # The optimizer that materialised a big view read twice is off in dbt's connections too,
    # and their allocator hands memory back from its own thread as the platform's does.
    profile = yaml.safe_load((DBT_PROJECT_DIR / "profiles.yml").read_text("utf-8"))
    dbt_settings = profile["finegrid"]["outputs"]["local"]["settings"]
    assert optimizers_off == dbt_settings["disabled_optimizers"] == "common_subplan"
    assert purging is True and dbt_settings["allocator_background_threads"] is True
    with Settings.from_env(env | {"DUCKDB_MAX_VACUUM_TASKS": "25"}).connect() as con:
        assert con.execute("select current_setting('max_vacuum_tasks')").fetchone()[0] == 25
    with pytest.raises(ConfigError, match="DUCKDB_MAX_VACUUM_TASKS must be a whole number"):
        Settings.from_env(env | {"DUCKDB_MAX_VACUUM_TASKS": "-1"})


def test_a_memory_limit_is_read_as_duckdb_reads_it_and_a_wrong_one_named_before_a_run():
    assert memory_bytes("X", "4GiB") == 4 * 2**30
    assert memory_bytes("X", "1024MiB") == 2**30
    # To the tenth of the unit DuckDB shows: 1.8 GiB, 476.8 MiB.
    assert memory_bytes("X", " 2 gigabytes") == pytest.approx(2e9, abs=0.1 * 2**30)
    assert memory_bytes("X", ".5GB") == pytest.approx(5e8, abs=0.1 * 2**20)
    assert memory_bytes("X", "-1") > memory_bytes("X", "1GiB")  # DuckDB's default: 80 %
    for wrong in ("abc", "50%", "4000000000", "4,5GB"):
        with pytest.raises(ConfigError, match=f"DUCKDB_MEMORY_LIMIT must be .* not '{wrong}'"):
            Settings.from_env({"DUCKDB_MEMORY_LIMIT": wrong})


def test_a_connection_that_needs_little_memory_takes_the_smaller_limit():
    def within(limit: str | None) -> str:
        env = {"DUCKDB_MEMORY_LIMIT": limit} if limit else {}
        return Settings.from_env(env).duckdb_config_within("1GiB")["memory_limit"]

    assert within("4GiB") == "1GiB"
    assert within(None) == "1GiB"  # DuckDB's default, 80 % of memory
    assert within("512MiB") == "512MiB"
    assert Settings.from_env({}).duckdb_config_within("1GiB")["max_vacuum_tasks"] == 0


def test_a_writer_leaves_its_rows_in_the_log_and_a_checkpoint_folds_them_in(tmp_path):
    """A writer does not checkpoint on closing (0.2 s on the 100k warehouse however little it
    wrote): its rows wait in the write-ahead log, which the next connection, a
    reader too, reads back; ``checkpoint`` folds them into the file, and a database attached
    beside the warehouse (the vault) is folded into its own file as the writer closes."""
    import duckdb

    warehouse, vault = tmp_path / "w.duckdb", tmp_path / "vault.duckdb"
    resource = FinegridResource(warehouse_path=str(warehouse))
    wal = Path(f"{warehouse}.wal")
    with resource.connect() as con:
        con.execute(f"ATTACH '{vault}' AS vault")
        con.execute("CREATE TABLE vault.t AS SELECT 1 AS x")
        con.execute("CREATE TABLE t AS SELECT range AS x FROM range(1000)")
    assert wal.exists() and wal.stat().st_size > 0
    assert not Path(f"{vault}.wal").exists()  # the vault whole in its file
    with duckdb.connect(str(vault), read_only=True) as con:
        assert con.execute("SELECT x FROM t").fetchall() == [(1,)]
    with resource.connect(read_only=True) as con:
        assert con.execute("SELECT count(*) FROM t").fetchone() == (1000,)
    resource.settings().checkpoint()
    assert not wal.exists() or wal.stat().st_size == 0
    copy = tmp_path / "copy.duckdb"
    shutil.copy(warehouse, copy)  # the file alone holds it now
    with duckdb.connect(str(copy), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM t").fetchone() == (1000,)
    Settings.from_env({"WAREHOUSE_PATH": str(tmp_path / "none.duckdb")}).checkpoint()
    assert not (tmp_path / "none.duckdb").exists()  # no warehouse: none made


@pytest.mark.parametrize("value", ["0", "two", "-2", "1.5"])
def test_a_wrong_dbt_thread_count_fails_before_dbt_runs(value):
    with pytest.raises(
        ConfigError, match=f"DBT_THREADS must be a whole number of 1 or more, not '{value}'"
    ):
        Settings.from_env({"DBT_THREADS": value})
    assert Settings.from_env({"DBT_THREADS": "3"}).dbt_threads == 3


def test_the_whole_ingestion_materialises_and_its_checks_pass(defs, drop, tmp_path, monkeypatch):
    landing = tmp_path / "landing"
    shutil.copytree(drop.landing, landing)
    monkeypatch.setenv("PII_KEY", PII_KEY)
    resource = FinegridResource(
        landing_dir=str(landing),
        warehouse_path=str(tmp_path / "w.duckdb"),
        pii_vault_path=str(tmp_path / "v.duckdb"),
    )
    months = landing_months(landing, load_contracts().values())
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(MONTHS.name, months)
        result = dg.materialize(
            [*defs.assets, *defs.asset_checks],
            selection=[*_raw_keys(defs), LEDGER_KEY],
            resources={"finegrid": resource, "dbt": dbt_resource()},
            instance=instance,
            tags={RANGE_START: months[0], RANGE_END: months[-1]},
        )
    assert result.success
    evaluations = [e for e in check_evaluations(result) if e.check_name != "month_file_on_time"]
    assert len(evaluations) == 22 and all(e.passed for e in evaluations)
    materialised = {
        e.asset_key.to_user_string(): e.step_materialization_data.materialization.metadata
        for e in result.all_events
        if e.event_type_value == "ASSET_MATERIALIZATION"
    }
    ledger = materialised.pop(LEDGER_KEY.to_user_string())
    assert materialised["raw/ami__daily_reading"]["rows_loaded"].value > 5_000
    # Each of the six whole-file defects hits at least one file of the drop.
    assert sum(m["files_rejected"].value for m in materialised.values()) >= 6
    # The ledger's totals are the sum of every extract's.
    for field in ("files_loaded", "files_rejected", "files_duplicate", "rows_loaded"):
        assert ledger[field].value == sum(m[field].value for m in materialised.values()), field


def test_a_missing_key_fails_with_a_clear_message(defs, drop, tmp_path, monkeypatch):
    monkeypatch.delenv("PII_KEY", raising=False)
    landing = tmp_path / "landing"
    shutil.copytree(drop.landing / "mkt", landing / "mkt")
    resource = FinegridResource(
        landing_dir=str(landing),
        warehouse_path=str(tmp_path / "w.duckdb"),
        pii_vault_path=str(tmp_path / "v.duckdb"),
    )
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(MONTHS.name, ["2024-01"])
        result = dg.materialize(
            [a for a in defs.assets if dg.AssetKey(["raw", "mkt__cons_archive"]) in a.keys],
            resources={"finegrid": resource},
            raise_on_error=False,
            instance=instance,
            partition_key="2024-01",
        )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "PII_KEY is not set" in str(failure.step_failure_data.error)


def test_dbt_gets_the_warehouse_as_an_absolute_path(tmp_path, monkeypatch):
    from orchestration.assets.warehouse import dbt_build_args
    from orchestration.settings import Settings

    monkeypatch.chdir(tmp_path)
    args = dbt_build_args(Settings.from_env({"WAREHOUSE_PATH": "data/w.duckdb"}))
    assert args[0] == "build"
    assert args[args.index("--warehouse") + 1] == str(tmp_path / "data/w.duckdb")
    # Not among dbt's --vars, which a saved parse holds for (orchestration/dbt_cli.py).
    assert "--vars" not in args


def test_a_snapshot_fingerprint_is_declared_by_documented_columns(tmp_path):
    """meta.snapshot_fingerprint, read from the manifest: the columns a view computes from the
    others, or a build stamp with the columns a view joins; anything else names the model's
    file."""
    import json

    from orchestration.assets.warehouse import snapshot_fingerprints
    from orchestration.publish.snapshot import RowHash

    def manifest(declared) -> Path:
        node = {
            "resource_type": "model",
            "name": "fct_days",
            "alias": "fct_days",
            "schema": "marts",
            "original_file_path": "models/marts/fct_days.sql",
            "config": {"meta": {"snapshot_fingerprint": declared}},
            "columns": {"built_at": {}, "day": {}, "month": {}},
        }
        other = node | {"name": "dim", "alias": "dim", "config": {"meta": {"zh": "维"}}}
        path = tmp_path / "manifest.json"
        nodes = {"model.finegrid.fct_days": node, "model.finegrid.dim": other}
        path.write_text(json.dumps({"nodes": nodes}), "utf-8")
        return path

    assert snapshot_fingerprints(manifest({"computed": ["month"]})) == {
        "marts.fct_days": RowHash(computed=("month",))
    }
    assert snapshot_fingerprints(manifest({"stamp": "built_at"})) == {
        "marts.fct_days": RowHash(stamp="built_at")
    }
    assert snapshot_fingerprints(manifest({"stamp": "built_at", "joined": ["month"]})) == {
        "marts.fct_days": RowHash(stamp="built_at", joined=("month",))
    }
    where = r"models/marts/fct_days.sql \(model fct_days\), meta.snapshot_fingerprint: "
    with pytest.raises(ConfigError, match=where + r"\['kwh'\] are not documented"):
        snapshot_fingerprints(manifest({"computed": ["month", "kwh"]}))
    with pytest.raises(ConfigError, match=where + r"computed \[1\] is not a list of columns"):
        snapshot_fingerprints(manifest({"computed": [1]}))
    with pytest.raises(ConfigError, match=where + r"joined 'month' is not a list of columns"):
        snapshot_fingerprints(manifest({"stamp": "built_at", "joined": "month"}))
    with pytest.raises(ConfigError, match=where + r"\['kwh'\] are not documented"):
        snapshot_fingerprints(manifest({"stamp": "built_at", "joined": ["kwh"]}))
    for wrong in (
        ["month"],
        {"stamp": "built_at", "computed": ["month"]},
        {"stamp": 1},
        {"computed": ["month"], "joined": ["day"]},
    ):
        with pytest.raises(ConfigError, match=where + ".* is neither"):
            snapshot_fingerprints(manifest(wrong))
    real = snapshot_fingerprints(manifest_path())
    assert real["marts.fct_daily_load_profile"] == RowHash(stamp="built_at")
    assert real["marts.fct_daily_energy"] == RowHash(
        stamp="built_at", joined=("is_known_customer",)
    )


def test_the_instance_stores_its_events_through_connections_it_keeps(tmp_path, monkeypatch):
    from orchestration import event_log
    from orchestration.settings import make_instance_home

    home = make_instance_home(tmp_path / "dagster_home")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    engines = []
    create = event_log.create_engine
    monkeypatch.setattr(
        event_log, "create_engine", lambda *a, **k: engines.append(a[0]) or create(*a, **k)
    )

    @dg.asset
    def first() -> int:
        return 1

    @dg.asset
    def second(first: int) -> int:
        return first + 1

    job = dg.Definitions(assets=[first, second]).resolve_implicit_global_asset_job_def()
    with dg.DagsterInstance.get() as instance:
        storage = instance.event_log_storage
        assert isinstance(storage, event_log.KeptOpenSqliteEventLogStorage)
        runs = [job.execute_in_process(instance=instance) for _ in range(event_log.KEPT + 2)]
        assert all(run.success for run in runs)
        # Each run's events went through one engine per database (the index and the run's),
        # created once: Dagster's own storage creates one per event.
        assert len(engines) == len(set(engines)) == len(runs) + 1
        # Only the databases written last stay open.
        assert len(storage.open_databases()) == event_log.KEPT
        assert {"index", runs[-1].run_id} <= set(storage.open_databases())
        # Write-ahead log, as Dagster sets it, and commits not flushed one by one (1: NORMAL).
        with storage._connect(runs[-1].run_id) as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1
        # Every event reads back, also from the runs whose database was closed.
        events = [len(instance.get_records_for_run(run.run_id).records) for run in runs]
        assert min(events) > 10 and len(set(events)) == 1
        assert instance.get_latest_materialization_event(dg.AssetKey("second")) is not None
    assert storage.open_databases() == []  # the instance disposed of its storage
    assert (home / "history" / "runs" / "index.db").exists()  # where Dagster keeps them


def test_the_event_log_storage_says_when_dagster_no_longer_has_what_it_builds_on(
    tmp_path, monkeypatch
):
    from orchestration import event_log

    # Dagster's class, through the one module that imports it from Dagster's internals.
    monkeypatch.delattr(event_log.SqliteEventLogStorage, "_initdb")
    with pytest.raises(RuntimeError, match=r"no \['_initdb'\].*not the pinned one"):
        event_log.KeptOpenSqliteEventLogStorage(str(tmp_path / "runs"))

"""The dbt project as Dagster assets: raw → staging → intermediate → marts, dbt tests as checks.

Nothing here runs dbt or reads the environment at import: the manifest is built by `make setup`
(``python -m orchestration parse``) or a test fixture, and read when definitions are built.
"""

import importlib.metadata
import json
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliInvocation, DbtCliResource, dbt_assets
from packaging import version

from orchestration.assets.ingestion import LEDGER_KEY
from orchestration.assets.policies import RUN_PER_MONTH, WRITER_POOL
from orchestration.dbt_cli import (
    DBT_PROJECT_DIR,
    DEFAULT_TARGET,
    WAREHOUSE_OPTION,
    install_parse_check,
)
from orchestration.partitions import MONTHS
from orchestration.publish.snapshot import RowHash
from orchestration.resources import FinegridResource
from orchestration.settings import ConfigError, Settings

LAYERS = ("staging", "intermediate", "marts", "publish")
# Models under models/publish (tagged `publish` in dbt_project.yml) read the models' outputs
# (schema ml), so they build in a second dbt invocation after them.
PUBLISH_SELECTION = "tag:publish"


def manifest_path(target_dir: Path = DEFAULT_TARGET) -> Path:
    """Where `parse` leaves the manifest; a clear error when it has not been built."""
    path = target_dir / "manifest.json"
    if not path.exists():
        raise ConfigError(
            f"no dbt manifest at {path}: run `make setup` (or `python -m orchestration parse`) "
            "after changing the dbt project"
        )
    return path


def parse_project(target_dir: Path = DEFAULT_TARGET) -> Path:
    """Build the manifest with dbt's own parser (in this process); return its path."""
    from dbt.cli.main import dbtRunner

    # The parse every new warehouse's dbt folder starts from: checked as finegrid-dbt checks.
    install_parse_check()
    args = ["parse", "--quiet", "--project-dir", str(DBT_PROJECT_DIR)]
    args += ["--profiles-dir", str(DBT_PROJECT_DIR), "--target-path", str(target_dir)]
    result = dbtRunner().invoke(args)
    if not result.success:
        raise ConfigError(f"dbt parse failed: {result.exception}")
    return target_dir / "manifest.json"


def snapshot_fingerprints(manifest: Path) -> dict[str, RowHash]:
    """Per model that declares it (``meta.snapshot_fingerprint``), as ``schema.table``: what
    the analyst snapshot's row hashes take instead of the whole row, ``{computed: [columns the
    view computes from the others]}`` or ``{stamp: the build stamp}``, with ``joined: [columns
    the view joins from elsewhere]`` beside a stamp (see ``RowHash``). A declaration of
    anything else, or of columns the model does not document, is an error."""
    nodes = json.loads(manifest.read_text("utf-8"))["nodes"].values()
    declared: dict[str, RowHash] = {}
    for node in nodes:
        value = (node.get("config", {}).get("meta") or {}).get("snapshot_fingerprint")
        if node["resource_type"] != "model" or value is None:
            continue
        where = f"{node['original_file_path']} (model {node['name']}), meta.snapshot_fingerprint"
        row_hash = _row_hash(value, where)
        if undocumented := [c for c in row_hash.named if c not in node["columns"]]:
            raise ConfigError(f"{where}: {undocumented} are not documented columns of the model")
        declared[f"{node['schema']}.{node['alias'] or node['name']}"] = row_hash
    return declared


def _row_hash(value: object, where: str) -> RowHash:
    def columns(key: str) -> tuple[str, ...]:
        named = value[key]
        if not (isinstance(named, list) and named and all(isinstance(c, str) for c in named)):
            raise ConfigError(f"{where}: {key} {named!r} is not a list of columns")
        return tuple(named)

    keys = sorted(value) if isinstance(value, dict) else []
    if keys == ["computed"]:
        return RowHash(computed=columns("computed"))
    if keys in (["stamp"], ["joined", "stamp"]) and isinstance(value["stamp"], str):
        return RowHash(stamp=value["stamp"], joined=columns("joined") if "joined" in value else ())
    raise ConfigError(
        f"{where}: {value!r} is neither {{computed: [columns]}} nor {{stamp: column}}"
        " (with joined: [columns])"
    )


def warehouse_args(warehouse: Path) -> list[str]:
    """finegrid-dbt's option naming the warehouse (absolute: dbt runs in its project dir)."""
    return [WAREHOUSE_OPTION, str(warehouse.resolve())]


def dbt_build_args(settings: Settings) -> list[str]:
    """`dbt build` against the configured warehouse, without the dbt unit tests.

    A unit test checks a model's SQL on fixed rows, so it can only fail when the code changes:
    the test suite runs them (`tests/test_warehouse.py`), a production build need not (dbt's
    own advice; dagster-dbt reports no check for them either). In a build each one also gates
    its model: `int_meter_readings`, at the head of the longest path, waited for its unit test,
    scheduled behind every data test of its level."""
    return [
        "build",
        "--exclude-resource-type",
        "unit_test",
        *warehouse_args(settings.warehouse_path),
    ]


def dbt_executable() -> str:
    """dbt as the platform runs it: ``finegrid-dbt`` (``orchestration/dbt_cli.py``), installed
    with the project beside this Python, so an un-activated venv still finds it."""
    beside = Path(sys.executable).parent / "finegrid-dbt"
    return str(beside) if beside.exists() else "finegrid-dbt"


def dbt_command(
    warehouse: Path, target_dir: Path, *args: str, extra_vars: Mapping[str, object] | None = None
) -> list[str]:
    """A dbt command line for a child process (benchmarks, tests) against ``warehouse``, with
    its artifacts in ``target_dir`` and ``extra_vars`` as dbt's ``--vars`` (which dbt's parse
    state holds for: a command with them parses the whole project)."""
    command = [
        dbt_executable(),
        *args,
        "--project-dir",
        str(DBT_PROJECT_DIR),
        "--profiles-dir",
        str(DBT_PROJECT_DIR),
        "--target-path",
        str(target_dir),
        *warehouse_args(warehouse),
    ]
    return command + (["--vars", json.dumps(dict(extra_vars))] if extra_vars else [])


def dbt_target_path(warehouse: Path) -> Path:
    """dbt's folder for one warehouse, beside it (``warehouse.duckdb`` → ``warehouse.duckdb.dbt``),
    shared by both invocations and reused run after run: dbt then parses only what changed (a
    new folder starts from the project's parse, see ``orchestration/dbt_cli.py``) and
    ``finegrid-dbt`` finds the seconds each node took last time, where a fresh folder per
    invocation (dagster-dbt's default) re-parsed the whole project each time, ~12 s. Beside
    the warehouse, the folder goes when it goes: under the project's ``target/`` every test's
    or benchmark's warehouse left one behind for good (1.3 GB of them on a developer's
    machine). Invocations on one warehouse never overlap (the writers' pool), so neither do
    their uses of the folder."""
    warehouse = warehouse.absolute()
    return warehouse.with_name(f"{warehouse.name}.dbt")


class WarehouseTranslator(DagsterDbtTranslator):
    """Models keyed and grouped by their schema (staging/…, marts/…); sources stay raw/<table>,
    the keys of the ingestion assets, so lineage runs from the landing zone to the marts. The
    seeds, models without refs and every model reading a raw table also depend on the ledger
    (``ops/load_ledger``), which joins every ingestion asset: a backfill then builds the
    warehouse once, after all its ingestion, in one dbt run (see ``build_ledger_asset``)."""

    def get_asset_spec(
        self, manifest: Mapping[str, Any], unique_id: str, project: Any = None
    ) -> dg.AssetSpec:
        spec = super().get_asset_spec(manifest, unique_id, project)
        props = self.get_resource_props(manifest, unique_id)
        if props["resource_type"] not in ("model", "seed", "snapshot"):
            return spec
        layer = props["schema"] if props["schema"] in LAYERS else "staging"
        reads_raw = any(d.asset_key.path[0] == "raw" for d in spec.deps)
        # Seeds and models without refs start the warehouse too: with them its run is whole.
        waits = reads_raw or not spec.deps
        return spec.replace_attributes(
            key=dg.AssetKey([layer, props["name"]]), group_name=layer
        ).merge_attributes(
            kinds={"dbt", "duckdb"} - set(spec.kinds),
            deps=[LEDGER_KEY] if waits else [],
        )


def _dbt_build_assets(manifest: Path, name: str, **options: Any) -> dg.AssetsDefinition:
    @dbt_assets(
        manifest=manifest,
        dagster_dbt_translator=WarehouseTranslator(),
        name=name,
        pool=WRITER_POOL,
        **options,
    )
    def _build(
        context: dg.AssetExecutionContext, dbt: DbtCliResource, finegrid: FinegridResource
    ) -> Iterator[Any]:
        settings = finegrid.settings()
        target = dbt_target_path(settings.warehouse_path)
        yield from stream_until_done(
            dbt.cli(dbt_build_args(settings), context=context, target_path=target)
        )

    return _build


def stream_until_done(invocation: DbtCliInvocation) -> Iterator[Any]:
    """A dbt invocation's events; if the step fails while dbt still runs, dbt is stopped before
    the error goes on. dagster-dbt stops it only when the run is interrupted: after any other
    failure (an event Dagster cannot place, say, from a manifest older than the project) the
    child went on building unseen and held the warehouse's lock, so the next run could not
    open it."""
    try:
        yield from invocation.stream()
    except BaseException:
        process = invocation.process
        if process.poll() is None:
            # As dagster-dbt forwards an interrupt: dbt cancels its queries and exits.
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=invocation.termination_timeout_seconds)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        raise


def build_warehouse_assets(manifest: Path) -> list[dg.AssetsDefinition]:
    """Two dbt invocations. The warehouse (staging → marts) is not partitioned: every build
    takes every month there is (whole tables, or the months loaded since the last build for the
    incremental ones), so it is one asset per model, built once however many months a run or a
    backfill ingests. Partitioned by month it recorded an event per model and month (36 models
    × 24 months), written one by one to Dagster's event log: a third of a run's time at 400
    accounts. The publish marts (KPI, SLA) read a month's models' outputs, so they stay in each
    month's run of the models and publishing, and a backfill runs a month's chain as one run."""
    return [
        _dbt_build_assets(manifest, "warehouse", exclude=PUBLISH_SELECTION),
        _dbt_build_assets(
            manifest,
            "publish_marts",
            select=PUBLISH_SELECTION,
            partitions_def=MONTHS,
            backfill_policy=RUN_PER_MONTH,
        ),
    ]


class WarehouseDbt(DbtCliResource):
    """dagster-dbt's resource without two steps it takes before every invocation that this
    platform does not use, ~10 s per dbt command on two cores: asking the dbt executable its
    version (a child process importing dbt; the dbt beside us is the dbt-core installed with
    us), and opening a dbt adapter in this process (used only by ``fetch_row_counts`` and
    ``fetch_column_metadata``, which the warehouse assets do not call)."""

    @cached_property
    def _cli_version(self) -> version.Version:
        return version.parse(importlib.metadata.version("dbt-core"))

    def _initialize_dbt_core_adapter(self, args: Sequence[str]) -> None:
        return None


def dbt_resource() -> DbtCliResource:
    return WarehouseDbt(
        project_dir=str(DBT_PROJECT_DIR),
        profiles_dir=str(DBT_PROJECT_DIR),
        dbt_executable=dbt_executable(),
    )

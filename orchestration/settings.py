"""Configuration from the environment with safe local defaults, read at run time, not import."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import duckdb
import yaml

DEFAULTS = {
    "LANDING_DIR": "data/landing",
    "WAREHOUSE_PATH": "data/warehouse.duckdb",
    "PUBLISH_DIR": "data/publish",
    "PII_VAULT_PATH": "data/pii_vault.duckdb",
    "MODEL_DIR": "data/models",
    # DuckDB's own default (80 % of the machine's memory); e.g. 4GiB bounds every connection,
    # which then spills to disk beside the database.
    "DUCKDB_MEMORY_LIMIT": "-1",
    # Row groups DuckDB may merge and rewrite at a checkpoint. Its default (100) rewrote the
    # append-only raw tables after every load: each file leaves a part-filled row group, and
    # every later checkpoint, however small its change, merged more of them (100,000 accounts:
    # the closes after the readings, curves and meter changes 43 s → 1 s). 0 never compacts;
    # rows an incremental model deletes then stay marked deleted until `make rebuild`.
    "DUCKDB_MAX_VACUUM_TASKS": "0",
}


# Not a setting: how the platform's SQL is written to run (see dbt_project/profiles.yml).
DISABLED_OPTIMIZERS = "common_subplan"
# DuckDB's allocator hands freed memory back to the system from a thread of its own, instead of
# only when a task ends past a threshold (dbt_project/profiles.yml has the measurements).
ALLOCATOR_BACKGROUND_THREADS = True


def instance_env(root: Path, pii_key: str) -> dict[str, str]:
    """The environment of a platform instance kept whole under one folder (a benchmark, a test,
    a UI try-out): each path setting and DAGSTER_HOME inside ``root``, absolute, as Dagster
    requires."""
    root = root.resolve()
    return {
        **{
            name: str(root / Path(default).name)
            for name, default in DEFAULTS.items()
            if name.endswith(("_DIR", "_PATH"))
        },
        "DAGSTER_HOME": str(root / "dagster_home"),
        "PII_KEY": pii_key,
    }


# The Dagster instance settings of the repository (pools, the event log storage).
INSTANCE_SETTINGS = Path(__file__).resolve().parents[1] / "dagster_home" / "dagster.yaml"


def make_instance_home(home: Path) -> Path:
    """Create the folder ``home`` of a Dagster instance (``DAGSTER_HOME`` of ``instance_env``)
    with the repository's instance settings in it, so that a benchmark or a test runs with the
    instance the platform runs with, not Dagster's defaults. The event log's folder is written
    in, ``home/history/runs`` (where the repository's instance finds it from DAGSTER_HOME):
    the instance then opens from its folder alone, as ``DagsterInstance.from_config``."""
    home.mkdir(parents=True, exist_ok=True)
    settings = yaml.safe_load(INSTANCE_SETTINGS.read_text("utf-8"))
    if "event_log_storage" in settings:
        config = settings["event_log_storage"].setdefault("config", {})
        config["base_dir"] = str(home.resolve() / "history" / "runs")
    (home / "dagster.yaml").write_text(yaml.safe_dump(settings, sort_keys=False), "utf-8")
    return home


class ConfigError(RuntimeError):
    """A setting that is missing or wrong, named."""


def _count(name: str, value: str, least: int = 0) -> int:
    if not value.strip().isdigit() or int(value) < least:
        raise ConfigError(f"{name} must be a whole number of {least} or more, not {value!r}")
    return int(value)


# DuckDB's display of a memory size (``current_setting('memory_limit')``): "4.0 GiB".
_SHOWN_UNITS = {"bytes": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40, "PiB": 2**50}


# Kept per value: settings load at every connection a step opens (47 times in a month's
# increment), and each reading opens a DuckDB (0.88 s of that increment at 10,000 accounts).
@functools.cache
def memory_bytes(name: str, value: str) -> int:
    """The bytes of a DuckDB memory limit (``-1``: DuckDB's default, 80 % of memory), as DuckDB
    itself reads it, so that its units and forms are DuckDB's (``4GiB``, ``500MB``, ``.5 GB``),
    to within a tenth of the unit DuckDB shows it in (2e9 bytes: 1.8 GiB). A value DuckDB does
    not take is a ConfigError naming ``name``, raised before a run rather than at its first
    connection."""
    try:
        with duckdb.connect(config={"memory_limit": value}) as con:
            (shown,) = con.execute("SELECT current_setting('memory_limit')").fetchone()
    except duckdb.Error as error:
        message = str(error).splitlines()[0]
        raise ConfigError(
            f"{name} must be a memory size DuckDB takes, e.g. 4GiB, not {value!r} ({message})"
        ) from None
    number, unit = shown.split()
    return round(float(number) * _SHOWN_UNITS[unit])


@dataclass(frozen=True)
class Settings:
    landing_dir: Path
    warehouse_path: Path
    publish_dir: Path
    pii_vault_path: Path
    pii_key: str | None
    model_dir: Path = Path(DEFAULTS["MODEL_DIR"])
    memory_limit: str = DEFAULTS["DUCKDB_MEMORY_LIMIT"]
    max_vacuum_tasks: int = int(DEFAULTS["DUCKDB_MAX_VACUUM_TASKS"])
    # DBT_THREADS is read by dbt itself (dbt_project/profiles.yml, which holds the default);
    # it is checked here so that a wrong value fails before a run, named, not inside dbt.
    dbt_threads: int | None = None

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)

        def get(name: str) -> str:
            return env.get(name) or DEFAULTS[name]

        memory_bytes("DUCKDB_MEMORY_LIMIT", get("DUCKDB_MEMORY_LIMIT"))
        return cls(
            landing_dir=Path(get("LANDING_DIR")),
            warehouse_path=Path(get("WAREHOUSE_PATH")),
            publish_dir=Path(get("PUBLISH_DIR")),
            pii_vault_path=Path(get("PII_VAULT_PATH")),
            pii_key=env.get("PII_KEY") or None,
            model_dir=Path(get("MODEL_DIR")),
            memory_limit=get("DUCKDB_MEMORY_LIMIT"),
            max_vacuum_tasks=_count("DUCKDB_MAX_VACUUM_TASKS", get("DUCKDB_MAX_VACUUM_TASKS")),
            dbt_threads=(
                _count("DBT_THREADS", env["DBT_THREADS"], least=1)
                if env.get("DBT_THREADS")
                else None
            ),
        )

    @property
    def duckdb_config(self) -> dict[str, str | int]:
        """The settings every DuckDB connection of the platform opens with (dbt's: the
        profile's ``settings``, dbt_project/profiles.yml, which says why the optimizer is off)."""
        return {
            "memory_limit": self.memory_limit,
            "max_vacuum_tasks": self.max_vacuum_tasks,
            "disabled_optimizers": DISABLED_OPTIMIZERS,
            "allocator_background_threads": ALLOCATOR_BACKGROUND_THREADS,
        }

    def duckdb_config_within(self, most: str) -> dict[str, str | int]:
        """``duckdb_config`` for a connection that needs no more than ``most`` memory (a DuckDB
        size): its limit is the smaller of that and DUCKDB_MEMORY_LIMIT."""
        config = self.duckdb_config
        if memory_bytes("DUCKDB_MEMORY_LIMIT", self.memory_limit) > memory_bytes("most", most):
            config["memory_limit"] = most
        return config

    def require_pii_key(self) -> str:
        if not self.pii_key:
            raise ConfigError(
                "PII_KEY is not set: the personal-data vault is encrypted with it. Set PII_KEY "
                "in the environment (make demo/run/ui create a local one in data/.pii_key)."
            )
        return self.pii_key

    def connect(self, read_only: bool = False) -> duckdb.DuckDBPyConnection:
        """A connection to the warehouse file (created with its folder on first use).

        A writer leaves what it wrote in the write-ahead log when it closes, instead of
        checkpointing: a checkpoint of the 100,000-account warehouse cost about 0.75 s
        however little was written (0.2 s since vacuuming is off), and the connections of a
        month's run paid 8.5 s for them. The log is durable; the next connection reads it
        back, and it is folded into the file when it passes DuckDB's threshold and by
        ``checkpoint`` (at the end of ``run_months``); dbt's connections leave it too
        (orchestration/dbt_cli.py).
        Copy the file with its ``.wal``, or after a checkpoint."""
        if not read_only:
            self.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
        con = duckdb.connect(
            str(self.warehouse_path), read_only=read_only, config=self.duckdb_config
        )
        if not read_only:
            con.execute("PRAGMA disable_checkpoint_on_shutdown")
        return con

    def checkpoint(self) -> None:
        """Fold the warehouse's write-ahead log into its file (if there is a warehouse)."""
        if self.warehouse_path.exists():
            with duckdb.connect(str(self.warehouse_path), config=self.duckdb_config) as con:
                con.execute("CHECKPOINT")

"""Dagster's SQLite event log with its connections kept open between writes.

Dagster's ``SqliteEventLogStorage`` opens a new SQLite engine and connection for every read and
write of its records and disposes of it after: a run of this platform stores hundreds of events
(a build's models, its ~180 tests as asset checks, each step's start and end), and at 100,000
accounts the monthly increment opened SQLite 5,648 times, 12.0 s of its process in storing 926
events, part of it beside dbt on the same two cores. This storage is Dagster's own, the same
files and the same tables, except that each database it writes keeps one engine, whose
connection pool keeps its connection open: the increment took 112.0 and 114.5 s against 116.0
and 119.0 s with Dagster's storage, back to back on one 100k base (``docs/performance.md``).

Dagster's storage holds its lock while a connection is in use, so a kept connection serves one
thread at a time, whichever thread it is. Only the last ``KEPT`` databases keep an engine
(every run has its own; the webserver reads many), and ``dispose`` closes them all. SQLite's
write-ahead log, which Dagster turns on, lets the daemon, the webserver and the run workers
write the same files while each keeps its connection; its commits are not flushed to disk one
by one (``SYNCHRONOUS``), as SQLite recommends in that mode.

The instance of the repository (``dagster_home/dagster.yaml``) names it as its event log
storage; its records stay where Dagster puts them, ``$DAGSTER_HOME/history/runs``.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from dagster import Field, StringSource

# Dagster exports no SQLite event log storage: this module builds on its internal one, pinned
# with Dagster (pyproject.toml), and checks on construction that what it overrides is there.
from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
    SQLITE_BUSY_TIMEOUT_SECONDS,
    SqliteEventLogStorage,
)
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine

if TYPE_CHECKING:
    from dagster._serdes import ConfigurableClassData

KEPT = 8  # databases whose engine stays open: the index and the runs written last
# SQLite's recommended durability in write-ahead-log mode: a commit is not flushed to disk
# until the log is folded into the database, so it survives the process dying but may be lost
# with the machine (never the database's consistency). Flushing each of the ~3,000 commits of
# the 100,000-account increment cost 2.0 s of its process.
SYNCHRONOUS = "NORMAL"
# What of Dagster's storage this one overrides or uses: its private connection method, the set
# of databases it has set up, their setup and the lock around each use.
OVERRIDDEN = ("_connect", "_initdb")
USED = ("_initialized_dbs", "_db_lock")


def default_base_dir() -> str:
    """Where Dagster's default storage keeps the event log: ``$DAGSTER_HOME/history/runs``."""
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        raise RuntimeError(
            "DAGSTER_HOME is not set: the event log storage of dagster.yaml has no folder "
            "(set DAGSTER_HOME, or give the storage a base_dir)"
        )
    return os.path.join(home, "history", "runs")


def _require(missing: list[str]) -> None:
    if missing:
        raise RuntimeError(
            f"Dagster's SqliteEventLogStorage has no {missing}: this Dagster is not the pinned "
            "one (orchestration/event_log.py builds on them)"
        )


def _relaxed_sync(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.execute(f"PRAGMA synchronous={SYNCHRONOUS}")


class KeptOpenSqliteEventLogStorage(SqliteEventLogStorage):
    """``SqliteEventLogStorage`` whose databases keep their connection between writes."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None):
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        _require([n for n in OVERRIDDEN if not callable(getattr(SqliteEventLogStorage, n, None))])
        super().__init__(base_dir, inst_data)  # sets up the index database with _initdb
        _require([name for name in USED if not hasattr(self, name)])

    @classmethod
    def config_type(cls) -> dict[str, Any]:
        return {"base_dir": Field(StringSource, is_required=False)}

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: dict[str, Any]
    ) -> KeptOpenSqliteEventLogStorage:
        return cls(config_value.get("base_dir") or default_base_dir(), inst_data)

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        with self._db_lock:
            engine = self._engine(shard)
            with engine.connect() as conn, conn.begin():
                yield conn

    def _engine(self, shard: str) -> Engine:
        """The shard's engine, created (and its database set up) on first use; the one used
        longest ago is closed when more than ``KEPT`` are open. Called under the lock."""
        engine = self._engines.get(shard)
        if engine is not None:
            self._engines.move_to_end(shard)
            return engine
        engine = create_engine(
            self.conn_string_for_shard(shard),
            # The pool's connection is used by whichever thread holds the lock.
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS, "check_same_thread": False},
            pool_size=1,
        )
        event.listen(engine, "connect", _relaxed_sync)
        if shard not in self._initialized_dbs:
            self._initdb(engine)
            self._initialized_dbs.add(shard)
        self._engines[shard] = engine
        while len(self._engines) > KEPT:
            _, oldest = self._engines.popitem(last=False)
            oldest.dispose()
        return engine

    def open_databases(self) -> list[str]:
        """The shards whose engine is open, the one used last at the end."""
        return list(self._engines)

    def dispose(self) -> None:
        with self._db_lock:
            while self._engines:
                self._engines.popitem()[1].dispose()
        super().dispose()

"""Dagster resources: the platform's settings, resolved from the environment at run time."""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import dagster as dg
import duckdb

from orchestration.settings import Settings


class FinegridResource(dg.ConfigurableResource):
    """Where the landing zone, warehouse, vault and publish folder are.

    Each field overrides its environment variable; left empty, the environment (or the local
    default) applies, read when a run starts rather than when the code location loads.
    """

    landing_dir: str | None = None
    warehouse_path: str | None = None
    publish_dir: str | None = None
    pii_vault_path: str | None = None
    model_dir: str | None = None

    def settings(self) -> Settings:
        overrides = {
            "landing_dir": self.landing_dir,
            "warehouse_path": self.warehouse_path,
            "publish_dir": self.publish_dir,
            "pii_vault_path": self.pii_vault_path,
            "model_dir": self.model_dir,
        }
        return replace(Settings.from_env(), **{k: Path(v) for k, v in overrides.items() if v})

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        con = self.settings().connect(read_only=read_only)
        try:
            yield con
        finally:
            if not read_only:
                # A database attached beside the warehouse (the vault, small) is folded into
                # its file on closing, so that it is whole in that file alone.
                for (name,) in con.execute(
                    "SELECT database_name FROM duckdb_databases() WHERE NOT internal "
                    "AND NOT readonly AND database_name <> current_database()"
                ).fetchall():
                    con.execute(f'CHECKPOINT "{name}"')
            con.close()

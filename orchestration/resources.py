"""Dagster resources: the platform's settings, resolved from the environment at run time."""

from collections.abc import Iterator
from contextlib import contextmanager

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

    def settings(self) -> Settings:
        overrides = {
            "LANDING_DIR": self.landing_dir,
            "WAREHOUSE_PATH": self.warehouse_path,
            "PUBLISH_DIR": self.publish_dir,
            "PII_VAULT_PATH": self.pii_vault_path,
        }
        base = Settings.from_env()
        env = {k: v for k, v in overrides.items() if v}
        return Settings.from_env({**_as_env(base), **env})

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        con = self.settings().connect(read_only=read_only)
        try:
            yield con
        finally:
            con.close()


def _as_env(s: Settings) -> dict[str, str]:
    env = {
        "LANDING_DIR": str(s.landing_dir),
        "WAREHOUSE_PATH": str(s.warehouse_path),
        "PUBLISH_DIR": str(s.publish_dir),
        "PII_VAULT_PATH": str(s.pii_vault_path),
    }
    if s.pii_key:
        env["PII_KEY"] = s.pii_key
    return env

"""Shared fixtures: one small simulated drop with every defect, ingested once per session."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest

from data_contracts import load_contracts
from orchestration.ingest.loader import ExtractOutcome, ingest_extract
from orchestration.ingest.pii import attach_vault
from simulator.cli import simulate
from simulator.defects import DefectRates

PII_KEY = "test-key-0123456789abcdef"


@dataclass
class Drop:
    landing: Path
    truth: Path
    defects: dict

    def files_with(self, defect: str) -> list[str]:
        return [f["path"] for f in self.defects["files"] if f["defect"] == defect]


@dataclass
class Ingested:
    drop: Drop
    landing: Path  # a copy: ingestion moves rejected files aside
    warehouse: Path
    vault: Path
    outcomes: dict[str, ExtractOutcome]

    def connect(self) -> duckdb.DuckDBPyConnection:
        return duckdb.connect(str(self.warehouse), read_only=True)


def make_drop(
    root: Path,
    accounts: int = 150,
    months: int = 3,
    seed: int = 7,
    rates: DefectRates | None = None,
) -> Drop:
    landing, truth = root / "landing", root / "truth"
    simulate(accounts, months, 202510, seed, landing, truth, rates or DefectRates())
    return Drop(landing, truth, json.loads((truth / "defects.json").read_text("utf-8")))


def ingest_all(landing: Path, warehouse: Path, vault: Path) -> dict[str, ExtractOutcome]:
    con = duckdb.connect(str(warehouse))
    try:
        attach_vault(con, vault, PII_KEY)
        return {name: ingest_extract(con, landing, c) for name, c in load_contracts().items()}
    finally:
        con.close()


# Every defect strikes at least once in any drop; the rare ones are raised so this drop of
# 150 accounts × 3 months holds several of each, and a meter near its wrap value really wraps.
TEST_RATES = DefectRates().with_overrides(
    {
        "correction_bill": 0.03,
        "reversal": 0.02,
        "meter_change": 0.02,
        "spike": 0.002,
        "tou_mismatch": 0.03,
        "order_disorder": 0.05,
        "bad_value": 0.003,
        "duplicate_row": 0.005,
        "late_duplicate": 0.02,
        "orphan": 0.005,
        "rollover": 0.3,
    }
)


def pytest_configure(config: pytest.Config) -> None:
    # Three workers and the pipelines they start share two cores. With scikit-learn's OpenMP
    # threads at their default (one per core) the suite took 8 min 34 s and 14.3 CPU-minutes;
    # with one thread per process, 6 min 11 s and 9.5 (waiting OpenMP threads spin on a core
    # another process needs). Subprocesses inherit it; results do not depend on it.
    os.environ.setdefault("OMP_NUM_THREADS", "1")


# The end-to-end modules, longest first (in a suite of 6 min 19 s: incremental ~350 s in one
# worker, reliability ~265 s, warehouse ~200 s, ui ~100 s).
LONGEST_FIRST = ("test_incremental", "test_reliability", "test_warehouse", "test_ui")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The end-to-end modules (marked slow) first, the longest before the others. `make test`
    # hands whole modules to the next free worker in collection order (`--dist loadfile
    # --no-loadscope-reorder`); xdist's own order (most tests first) started them last, and the
    # longest finished alone at the end.
    def order(item: pytest.Item) -> tuple[bool, int]:
        module = item.path.stem
        rank = LONGEST_FIRST.index(module) if module in LONGEST_FIRST else len(LONGEST_FIRST)
        return item.get_closest_marker("slow") is None, rank

    items.sort(key=order)


@pytest.fixture(scope="session")
def drop(tmp_path_factory: pytest.TempPathFactory) -> Drop:
    return make_drop(tmp_path_factory.mktemp("drop"), rates=TEST_RATES)


@pytest.fixture(scope="session")
def ingested(drop: Drop, tmp_path_factory: pytest.TempPathFactory) -> Ingested:
    root = tmp_path_factory.mktemp("ingested")
    landing = root / "landing"
    shutil.copytree(drop.landing, landing)
    warehouse, vault = root / "warehouse.duckdb", root / "vault.duckdb"
    outcomes = ingest_all(landing, warehouse, vault)
    return Ingested(drop, landing, warehouse, vault, outcomes)


@pytest.fixture(scope="session")
def dbt_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The dbt manifest, parsed once per test process into its own target folder."""
    from orchestration.assets.warehouse import parse_project

    return parse_project(tmp_path_factory.mktemp("dbt_target"))


CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's headless Chromium, installed here when missing (apt, as root); the test skips,
    saying why, only where it cannot be installed."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    import os
    import subprocess

    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("chromium is missing and cannot be installed here (needs root and apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for args in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            pytest.skip(f"installing chromium failed: {' '.join(args)}: {done.stderr[-500:]}")
    found = shutil.which("chromium")
    if not found:
        pytest.skip("apt-get installed chromium but it is not on PATH")
    return found

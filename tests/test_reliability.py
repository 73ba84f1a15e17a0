"""Crashes, re-runs, concurrent readers and personal data, on the pipeline as operators run it:
`python -m orchestration run` in a process of its own, with its Dagster instance, logs and dbt
artefacts on disk, on one drop of 400 accounts × 16 months (enough history for the risk model).

- An uninterrupted run is the reference.
- A second instance is killed (SIGKILL, dbt's child process with it) during ingestion, run again
  and killed during the dbt build, then run to the end: it must equal the reference.
- The reference is run a second time while analysts query its snapshot.
- Every place the runs left a trace is scanned for the drop's personal data.

`make test` distributes tests by file, so this module runs beside the warehouse module.
"""

import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import polars as pl
import pytest

from data_contracts import load_contracts
from orchestration.assets.warehouse import dbt_target_path, manifest_path
from orchestration.ingest.reconcile import ledger_problems
from orchestration.publish.snapshot import COPIES, SNAPSHOT_NAME
from orchestration.settings import instance_env
from tests.conftest import PII_KEY, TEST_RATES, Drop, make_drop
from tests.outputs import (
    differences,
    english_name,
    published_files,
    read_target_list,
    text_columns_matching,
    warehouse_tables,
)

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


@dataclass
class Instance:
    """One platform instance kept whole under ``root``, as `make bench` and the UI try-out
    keep theirs."""

    root: Path
    # False: Dagster's history in memory (no DAGSTER_HOME), for runs whose Dagster records no
    # test reads; each event of the SQLite history costs ~40 ms.
    dagster_home: bool = True
    logs: list[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.env = {**os.environ, **instance_env(self.root, PII_KEY)}
        if self.dagster_home:
            Path(self.env["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
        else:
            del self.env["DAGSTER_HOME"]

    @property
    def warehouse(self) -> Path:
        return Path(self.env["WAREHOUSE_PATH"])

    @property
    def publish(self) -> Path:
        return Path(self.env["PUBLISH_DIR"])

    def run(self, kill_on: str | None = None, delay: float = 0.0) -> int | None:
        """The pipeline to its end (its exit code), or, with ``kill_on``, killed with SIGKILL
        ``delay`` seconds after a line of its log matches that pattern (None)."""
        log = self.root / f"run-{len(self.logs) + 1}.log"
        self.logs.append(log)
        proc = subprocess.Popen(
            [sys.executable, "-m", "orchestration", "run"],
            cwd=REPO,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the kill reaches dbt too
        )
        matched = threading.Event()

        def drain() -> None:  # keeps reading, so the pipeline never blocks on a full pipe
            with log.open("wb") as out:
                for line in proc.stdout:
                    out.write(line)
                    if kill_on and re.search(kill_on, line.decode("utf-8", "replace")):
                        matched.set()

        reader = threading.Thread(target=drain)
        reader.start()
        while kill_on and proc.poll() is None and not matched.wait(0.05):
            pass
        killed = kill_on is not None and matched.is_set() and proc.poll() is None
        if killed:
            time.sleep(delay)
            os.killpg(proc.pid, signal.SIGKILL)
            # The killed dbt child still holds the warehouse's lock for a moment after the
            # pipeline's own process is gone (seen once in the suite): wait for the whole group.
            _wait_until_gone(proc.pid)
        code = proc.wait()
        reader.join()
        return None if killed else code

    def dbt_target(self) -> Path:
        """dbt's folder for this warehouse, beside it, kept between runs."""
        return dbt_target_path(self.warehouse)

    def dbt_threads(self) -> int:
        """The threads dbt's last invocation on this warehouse ran with, as its log says (dbt
        rotates its log at 10 MB into dbt.log.1: the line may have moved there)."""
        logs = [self.dbt_target() / name for name in ("dbt.log.1", "dbt.log")]
        text = "".join(log.read_text() for log in logs if log.exists())
        return int(re.findall(r"Concurrency: (\d+) threads", text)[-1])

    def ledger_problems(self) -> list[str]:
        """The ledger against raw, for the extracts ingestion has reached."""
        with duckdb.connect(str(self.warehouse), read_only=True) as con:
            present = {
                t
                for (t,) in con.execute(
                    "SELECT 'raw.' || table_name FROM duckdb_tables() WHERE schema_name = 'raw'"
                ).fetchall()
            }
            return [
                p
                for c in load_contracts().values()
                if c.raw_table in present
                for p in ledger_problems(con, c)
            ]

    def tables(self) -> list[str]:
        with duckdb.connect(str(self.warehouse), read_only=True) as con:
            rows = con.execute(
                "SELECT table_schema || '.' || table_name FROM information_schema.tables"
            ).fetchall()
        return [t for (t,) in rows]


def _stat_fields(stat: Path) -> list[str]:
    """state, ppid, pgrp, … of a /proc stat file (`pid (comm) state …`; comm may hold spaces,
    so split after its ')'); empty when the process or thread ended while we looked."""
    try:
        return stat.read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _exiting_threads(process: Path) -> bool:
    """Whether a thread of the process has not finished exiting. A killed multi-threaded
    process (dbt, DuckDB's workers) shows its first thread as a zombie while the others still
    exit, and those still hold its files, the warehouse's lock among them: a reader then met
    "Conflicting lock is held in . (PID …)" (seen once in the suite)."""
    return any(
        fields and fields[0] not in ("Z", "X")
        for fields in map(_stat_fields, process.glob("task/*/stat"))
    )


def _group_members(pgid: int) -> list[int]:
    """Processes of a process group that are alive or still exiting, from /proc."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        fields = _stat_fields(stat)
        if len(fields) < 3 or int(fields[2]) != pgid:
            continue
        if fields[0] != "Z" or _exiting_threads(stat.parent):
            members.append(int(stat.parent.name))
    return members


def _wait_until_gone(pgid: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while members := _group_members(pgid):
        assert time.monotonic() < deadline, f"processes {members} outlived SIGKILL"
        time.sleep(0.05)


def test_a_killed_process_counts_until_its_last_thread_has_exited():
    # Its first thread ends first and turns zombie; another thread still runs (and, in dbt or
    # DuckDB, would still hold the warehouse's lock).
    code = (
        "import ctypes, threading, time\n"
        "threading.Thread(target=time.sleep, args=(1,)).start()\n"
        "ctypes.CDLL(None).pthread_exit(None)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while _stat_fields(Path(f"/proc/{proc.pid}/stat"))[:1] != ["Z"]:
            assert time.monotonic() < deadline, "the first thread never ended"
            time.sleep(0.02)
        assert _group_members(proc.pid) == [proc.pid]
    finally:
        proc.wait()
    assert _group_members(proc.pid) == []


def snapshot_counts(path: Path) -> dict[str, int]:
    with duckdb.connect(str(path), read_only=True) as con:
        tables = con.execute(
            "SELECT table_schema, table_name FROM information_schema.tables ORDER BY 1, 2"
        ).fetchall()
        return {
            f"{s}.{t}": con.execute(f'SELECT count(*) FROM "{s}"."{t}"').fetchone()[0]
            for s, t in tables
        }


@dataclass
class Reference:
    drop: Drop
    instance: Instance
    tables: dict
    published: dict
    snapshot: dict[str, int]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    manifest_path()  # the code location needs it: `make setup` builds it
    root = tmp_path_factory.mktemp("reliability")
    drop = make_drop(root / "drop", accounts=400, months=16, seed=23, rates=TEST_RATES)
    instance = Instance(root / "reference")
    shutil.copytree(drop.landing, instance.env["LANDING_DIR"])
    assert instance.run() == 0, instance.logs[-1].read_text("utf-8")[-3000:]
    return Reference(
        drop,
        instance,
        warehouse_tables(instance.warehouse),
        published_files(instance.publish),
        snapshot_counts(instance.publish / SNAPSHOT_NAME),
    )


def test_a_run_killed_in_ingestion_and_in_dbt_ends_equal_to_an_uninterrupted_run(
    reference, tmp_path
):
    crashed = Instance(tmp_path / "crashed", dagster_home=False)
    # dbt one node at a time here, two (the profile's default) in the reference: same results.
    crashed.env["DBT_THREADS"] = "1"
    shutil.copytree(reference.drop.landing, crashed.env["LANDING_DIR"])
    _crash_and_recover(crashed, reference)


def _crash_and_recover(crashed: Instance, reference: Reference) -> None:
    # Killed as soon as the first file of daily readings has committed: some files loaded, the
    # rest not. (A fixed delay after the step's start missed on a loaded CI machine: the kill
    # came before any file had committed.)
    assert crashed.run(kill_on=r"loaded ami/daily_reading/") is None
    with duckdb.connect(str(crashed.warehouse), read_only=True) as con:
        extracts = con.execute(
            "SELECT count(DISTINCT extract) FROM ops.load_ledger WHERE status = 'loaded'"
        ).fetchone()[0]
    assert 0 < extracts < len(load_contracts()), "the kill missed the ingestion"
    assert crashed.ledger_problems() == []

    # Killed once dbt has built its first intermediate model: the marts are not there yet.
    assert crashed.run(kill_on=r"Materialized value intermediate ") is None
    assert "marts.customer_features" not in crashed.tables(), "the kill missed the dbt build"
    assert crashed.ledger_problems() == []

    assert crashed.run() == 0, crashed.logs[-1].read_text("utf-8")[-3000:]
    assert (crashed.dbt_threads(), reference.instance.dbt_threads()) == (1, 2)
    assert crashed.ledger_problems() == []
    assert differences(reference.tables, warehouse_tables(crashed.warehouse)) == []
    assert differences(reference.published, published_files(crashed.publish)) == []
    assert len(reference.tables["publish.campaign_targets"]) > 0
    assert len(reference.tables["ml.risk_scores"]) > 0


class SnapshotReader(threading.Thread):
    """An analyst opening the snapshot over and over, counting every table's rows each time."""

    def __init__(self, path: Path):
        super().__init__()
        self.path, self.stop = path, threading.Event()
        self.seen: set[tuple] = set()  # each distinct state met: ((table, rows), …)
        self.reads, self.errors = 0, []

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.seen.add(tuple(sorted(snapshot_counts(self.path).items())))
                self.reads += 1
            except duckdb.Error as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}")
            time.sleep(0.1)


def test_a_second_run_changes_nothing_while_analysts_read_the_snapshot(reference):
    snapshot = reference.instance.publish / SNAPSHOT_NAME
    reader = SnapshotReader(snapshot)
    reader.start()
    try:
        assert reference.instance.run() == 0
    finally:
        reader.stop.set()
        reader.join()
    # No lock error ever, and every state read is a whole snapshot: the one before the run or
    # the one it published (the model-run log has two more rows), never a mix.
    before, after = (
        tuple(sorted(c.items())) for c in (reference.snapshot, snapshot_counts(snapshot))
    )
    assert reader.errors == [] and reader.reads > 100
    assert reader.seen <= {before, after}, sorted(reader.seen - {before, after})[:1]

    tables = warehouse_tables(reference.instance.warehouse)
    runs = "ml.model_runs"  # each model run is recorded: two more
    assert len(tables[runs]) == len(reference.tables[runs]) + 2
    assert differences(reference.tables, tables, ignore=frozenset({runs})) == []
    assert differences(reference.published, published_files(reference.instance.publish)) == []


# ── personal data ────────────────────────────────────────────────────────────────────────────

# Shorter values (two-character names, fragments) would match ordinary words.
MIN_LENGTH = {"CONS_NAME": 3, "ADDR": 6, "MOBILE": 8, "CERT_NO": 15}


def drop_personal_data(landing: Path) -> set[str]:
    """Every name, address, phone (as typed and as 11 digits) and identity number of the drop's
    customer archives."""
    values: set[str] = set()
    archive = load_contracts()["mkt__cons_archive"]
    for path in sorted((landing / archive.folder).glob("*.csv")):
        try:
            frame = pl.read_csv(path.read_bytes().decode("gbk").encode(), infer_schema=False)
        except UnicodeDecodeError:
            continue  # a damaged file of the drop: ingestion rejected it unread
        for column, shortest in MIN_LENGTH.items():
            for value in frame[column].drop_nulls():
                value = value.strip()
                if len(value) >= shortest and "*" not in value:
                    values.add(value)
                digits = re.sub(r"\D", "", value)[-11:]
                if column == "MOBILE" and len(digits) == 11:
                    values.add(digits)
    return values


def _text(path: Path) -> str:
    """A file's text as a person would read it: SQLite databases cell by cell, JSON's \\uXXXX
    escapes decoded (Dagster stores its events as ASCII JSON)."""
    if path.read_bytes()[:16] == b"SQLite format 3\x00":
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            cells = []
            for (table,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
                for row in con.execute(f'SELECT * FROM "{table}"'):
                    cells += [v if isinstance(v, str) else repr(v) for v in row]
            text = "\n".join(cells)
        finally:
            con.close()
    else:
        text = path.read_bytes().decode("utf-8", "replace")
    return re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), text)


def _published_text(path: Path) -> str:
    """A published file's text without the contact columns, which carry what the channel
    needs in clear by design (audited in ops.contact_audit)."""
    if path.suffix in (".csv", ".parquet"):
        frame = read_target_list(path)
        return frame.drop(
            [c for c in frame.columns if english_name(c).startswith("contact_")]
        ).write_csv()
    # The snapshot's copies are databases: their text columns are scanned as stores.
    return "" if path.suffix == ".duckdb" else path.read_text("utf-8")


def trace_files(reference: Reference) -> dict[str, str]:
    """Every file a run left outside the vault and the DuckDB files: run logs, the Dagster
    instance (event log, run storage, compute logs), dbt's logs and artefacts for this warehouse,
    the published files."""
    instance = reference.instance
    texts = {str(p): _text(p) for p in instance.logs}
    home = Path(instance.env["DAGSTER_HOME"])
    texts |= {str(p): _text(p) for p in home.rglob("*") if p.is_file()}
    texts |= {str(p): _text(p) for p in instance.dbt_target().rglob("*") if p.is_file()}
    texts |= {str(p): _published_text(p) for p in instance.publish.rglob("*") if p.is_file()}
    return texts


def test_no_personal_data_or_key_in_the_warehouse_snapshot_files_logs_or_dagster_events(
    reference,
):
    secrets = drop_personal_data(reference.drop.landing)
    assert len(secrets) > 1000
    secrets.add(PII_KEY)  # the vault's key, passed in the environment, is never written down
    pattern = "|".join(re.escape(s) for s in sorted(secrets))
    files = trace_files(reference)
    assert any("ASSET_MATERIALIZATION" in t for t in files.values())  # the event log was read
    planted = next(iter(sorted(secrets)))
    files["<control: a file holding one value>"] = f"... {planted} ..."

    con = duckdb.connect()
    con.execute("CREATE TABLE trace(source VARCHAR, text VARCHAR)")
    # Pieces of 1 MB that overlap by more than any value's length, so none is cut in two.
    pieces = [
        (source, text[i : i + 1_000_000])
        for source, text in files.items()
        for i in range(0, max(len(text), 1), 999_000)
    ]
    con.executemany("INSERT INTO trace VALUES (?, ?)", pieces)
    hits = con.execute(
        "SELECT DISTINCT source FROM trace WHERE regexp_matches(text, ?)", [pattern]
    ).fetchall()
    con.close()
    assert [s for (s,) in hits] == ["<control: a file holding one value>"]
    copies = sorted(reference.instance.publish.glob(f"{COPIES}/*.duckdb"))
    assert copies, "no snapshot copy to scan"
    stores = [reference.instance.warehouse, *copies]
    assert text_columns_matching(stores, pattern) == []

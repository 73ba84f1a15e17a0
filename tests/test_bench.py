"""The benchmark's own logic: what it does when its floor runs out of memory, when the disk is
too small for a size, and how it measures a stage's peak memory (bench/).

The figures themselves come from `make bench`, never from a timed test."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import duckdb
import pytest

from bench import disk
from bench.bench_pipeline import PY, add_floor_multiples, measure_floor, table, timed_exit
from bench.floor import FLOOR_TABLE

# A statement DuckDB cannot spill: a list aggregate's state stays in memory. It runs out at
# 16 MiB and completes at 1 GiB, as the real floor once ran out at 4 GiB at 1,000,000 accounts.
NEEDS_MEMORY = (
    f"create or replace table {FLOOR_TABLE} as select list(i) as l from range(4000000) t(i)"
)


def floor_env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "WAREHOUSE_PATH": str(tmp_path / "warehouse.duckdb"),
        "DUCKDB_MEMORY_LIMIT": "16MiB",
    }


def write_sql(tmp_path: Path, sql: str) -> Path:
    path = tmp_path / "floor.sql"
    path.write_text(sql)
    return path


def test_a_floor_out_of_memory_is_run_again_with_more(tmp_path: Path) -> None:
    env = floor_env(tmp_path)
    floor = measure_floor(env, write_sql(tmp_path, NEEDS_MEMORY), tmp_path / "bench.log", "1GiB")

    assert floor["ok"], (tmp_path / "bench.log").read_text()
    assert floor["memory_limit"] == "1GiB"
    assert floor["out_of_memory"]["memory_limit"] == "16MiB"
    assert floor["out_of_memory"]["seconds"] > 0
    assert "ran out of memory" in (tmp_path / "bench.log").read_text()
    with duckdb.connect(env["WAREHOUSE_PATH"], read_only=True) as con:
        assert con.execute(f"select len(l) from {FLOOR_TABLE}").fetchone()[0] == 4_000_000


def test_without_a_retry_limit_the_floor_out_of_memory_is_a_failure(tmp_path: Path) -> None:
    floor = measure_floor(
        floor_env(tmp_path), write_sql(tmp_path, NEEDS_MEMORY), tmp_path / "bench.log", ""
    )

    assert not floor["ok"]
    assert floor["memory_limit"] == "16MiB"
    assert "out_of_memory" not in floor


def test_a_floor_failing_otherwise_is_not_run_again(tmp_path: Path) -> None:
    sql = "create table bench.x as select nonsense from nowhere"
    floor = measure_floor(
        floor_env(tmp_path), write_sql(tmp_path, sql), tmp_path / "bench.log", "1GiB"
    )

    assert not floor["ok"]
    assert floor["memory_limit"] == "16MiB"
    assert "out_of_memory" not in floor
    assert "Catalog Error" in (tmp_path / "bench.log").read_text()


def bench_result(floor: dict, one_run: dict) -> dict:
    """One size's result as `bench_size` returns it, with ``floor`` and ``one_run`` given."""
    return {
        "accounts": 1_000_000,
        "months": 4,
        "stages": [
            {
                "name": "features",
                "seconds": 400.0,
                "rows": 1,
                "rows_per_second": 0,
                "peak_rss_mib": 1.0,
                "warehouse_mib": 1.0,
            }
        ],
        "end_to_end_seconds": 400.0,
        "peak_rss_mib": 1.0,
        "floor": floor,
        "increment": {
            "seconds": 10.0,
            "share_of_full_run": 0.1,
            "parts": {},
            "ml_and_publish_share": 0.05,
        },
        "one_run": one_run,
        "pandas": {"skipped": "too many"},
    }


AGREED = {"only_in_first": 0, "only_in_second": 0, "columns": {}}


def test_the_table_says_at_what_limit_the_floor_ran() -> None:
    floor = {
        "ok": True,
        "seconds": 800.0,
        "memory_limit": "12GiB",
        "out_of_memory": {"memory_limit": "4GiB", "seconds": 242.0},
        "disagreements": AGREED,
        "features_vs_floor": 0.5,
    }
    result = bench_result(floor, {"ok": False, "seconds": 1.0})

    assert "at 12GiB, after running out of memory at 4GiB in 242.0 s" in table([result])


def completed_one_run() -> dict:
    """A one run that completed in 500 s, agreeing with the staged run."""
    return {
        "ok": True,
        "seconds": 500.0,
        "peak_rss_mib": 1.0,
        "disagreements": AGREED,
        "parts": {"ingest": 100.0},
    }


def test_both_runs_are_given_as_multiples_of_the_floor_where_it_completed() -> None:
    floor = {"ok": True, "seconds": 200.0, "disagreements": AGREED, "features_vs_floor": 1.1}
    one = completed_one_run()
    add_floor_multiples(floor, 520.0, one)

    assert (floor["end_to_end_vs_floor"], one["vs_floor"]) == (2.6, 2.5)
    text = table([bench_result(floor, one)])
    assert "features/floor 1.10× (agrees), end to end 2.60× the floor;" in text
    assert "one process) 500.0 s (2.50× the floor), peak RSS" in text

    failed = {"ok": False, "seconds": 3.0, "disagreements": AGREED}
    one = completed_one_run()
    add_floor_multiples(failed, 520.0, one)  # a failed floor's seconds measure nothing

    assert "end_to_end_vs_floor" not in failed and "vs_floor" not in one
    text = table([bench_result(failed, one)])
    assert "FAILED (see bench.log)" in text and "one process) 500.0 s, peak RSS" in text


def fake_free(monkeypatch, free: int) -> None:
    usage = shutil.disk_usage("/")
    monkeypatch.setattr(disk.shutil, "disk_usage", lambda _: usage._replace(free=free))


def test_a_size_the_disk_cannot_hold_stops_the_bench_before_it_starts(
    tmp_path: Path, monkeypatch
) -> None:
    small, big = disk.needed_bytes(10_000, 24), disk.needed_bytes(1_000_000, 24)
    fake_free(monkeypatch, small + big // 4)
    with pytest.raises(disk.NotEnoughDisk) as stopped:
        disk.check_disk(tmp_path, [10_000, 1_000_000], 24)
    message = str(stopped.value)
    assert "1,000,000 accounts × 24 months" in message
    assert "after the sizes before it" in message
    # A quarter of 25 months' need is left for it, 6.25 months: 5 months simulate 6, which fit.
    assert "At most 5 months could fit (BENCH_MONTHS=5)" in message
    disk.check_disk(tmp_path, [10_000, 1_000_000], 5)  # and they do


def test_a_size_folder_an_earlier_bench_left_counts_as_free(tmp_path: Path, monkeypatch) -> None:
    need = disk.needed_bytes(1_000, 24)
    earlier = tmp_path / "n1000" / "warehouse.duckdb"
    earlier.parent.mkdir()
    earlier.write_bytes(os.urandom(2 * 2**20))
    fake_free(monkeypatch, need - 2**20)  # short by 1 MiB of the 2 MiB deleted before it runs
    disk.check_disk(tmp_path, [1_000], 24)
    # Another size's folder is not deleted for it: 999 accounts need 600 KiB less, still too much.
    with pytest.raises(disk.NotEnoughDisk, match="999 accounts × 24 months"):
        disk.check_disk(tmp_path, [999], 24)


def test_the_disk_a_tree_takes_counts_hard_links_once_and_sparse_files_as_written(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data.bin"
    data.write_bytes(os.urandom(4 * 2**20))
    os.link(data, tmp_path / "linked.bin")
    with (tmp_path / "sparse.duckdb").open("wb") as sparse:
        sparse.truncate(1 << 30)  # 1 GiB long, nothing written
    assert 4 * 2**20 <= disk.tree_bytes(tmp_path) < 5 * 2**20


def test_the_watch_keeps_a_peak_gone_by_the_end(tmp_path: Path) -> None:
    with disk.DiskWatch(tmp_path, every=0.05) as watch:
        spill = tmp_path / "spill.tmp"
        spill.write_bytes(os.urandom(3 * 2**20))
        time.sleep(0.5)
        spill.unlink()
    assert disk.tree_bytes(tmp_path) == 0
    assert watch.peak_bytes >= 3 * 2**20


def test_a_stage_peak_is_its_own_not_the_bench_process_high_water_mark(tmp_path: Path) -> None:
    # Linux hands a forked child its parent's high-water mark: measured directly, a child of
    # this 400 MiB process that allocates nothing peaked at 400 MiB too.
    grown = bytearray(400 * 2**20)
    grown[::4096] = b"\1" * len(grown[::4096])
    log = tmp_path / "bench.log"
    _, idle, code = timed_exit([PY, "-c", "pass"], dict(os.environ), log)
    assert code == 0
    assert idle < 100
    allocate = (
        "b = bytearray(200 * 2**20); b[::4096] = b'\\1' * len(b[::4096]); raise SystemExit(3)"
    )
    _, busy, code = timed_exit([PY, "-c", allocate], dict(os.environ), log)
    assert code == 3  # the floor's out-of-memory code comes through the launcher
    assert 200 <= busy < 300
    del grown


def test_a_stage_under_the_launcher_stops_on_ctrl_c_as_it_would_alone(tmp_path: Path) -> None:
    # The launcher ignores Ctrl-C to report how the command ended; the command must not inherit
    # that (an ignored signal stays ignored across exec), or Ctrl-C would not stop a stage.
    show = (
        "import signal, sys; sys.exit(10 + int(signal.getsignal(signal.SIGINT) is signal.SIG_IGN))"
    )
    alone = subprocess.run([PY, "-c", show]).returncode
    _, _, launched = timed_exit([PY, "-c", show], dict(os.environ), tmp_path / "bench.log")
    assert launched == alone

"""`make bench`: the whole pipeline on N accounts × 24 months, stage by stage, against the floor.

For each size: simulate 25 months (``--months`` + 1) and hold the last one back; run ingest →
features → dbt → ML → publish on the 24 (each stage a child process: wall time, peak RSS of it
and its children, warehouse size after it); run the feature floor (one DuckDB statement from the
raw tables, see ``bench/floor.py``) and the pandas baseline (``bench/pandas_features.py``) and
check both agree with the platform's table; run the 24 months again as `make run` runs them (one
process, one dbt build, into a warehouse of its own, checked against the staged one); then land
the 25th month and run it as the platform does (the increment). The one run and the increment
are also timed by part (ingest, warehouse, ml, publish: ``bench/stage.py``). Writes
``bench.json`` and prints a table.

    .venv/bin/python bench/bench_pipeline.py --accounts 10000,100000
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import pandas_features  # noqa: E402
from bench.disk import DiskWatch, check_disk, size_folder  # noqa: E402
from bench.floor import (  # noqa: E402
    FLOOR_TABLE,
    OUT_OF_MEMORY,
    compile_features,
    feature_disagreements,
    floor_sql,
)
from data_contracts import load_contracts  # noqa: E402
from orchestration.assets.warehouse import dbt_target_path  # noqa: E402
from orchestration.partitions import marked_files  # noqa: E402
from orchestration.settings import instance_env, make_instance_home  # noqa: E402

PY = sys.executable
# The default; --months changes it (1,000,000 × 24 months needs at least 238 GiB of disk).
MONTHS = 24
END = 202511  # the month after them, held back for the increment; the months before end in 2025-10


@dataclass
class Stage:
    name: str
    seconds: float
    rows: int
    peak_rss_mib: float
    warehouse_mib: float
    ok: bool
    # dbt's own elapsed time inside a dbt stage (run_results.json); the rest is Dagster's
    # start-up and bookkeeping (one event per model and month in its event log).
    dbt_seconds: float | None = None

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0

    def record(self) -> dict:
        return asdict(self) | {"rows_per_second": round(self.rows_per_second)}


def timed(command: list[str], env: dict[str, str], log: Path) -> tuple[float, float, bool]:
    """Wall seconds, peak RSS (MiB) of the process and the children it waited for, success."""
    seconds, rss, code = timed_exit(command, env, log)
    return seconds, rss, code == 0


def timed_exit(command: list[str], env: dict[str, str], log: Path) -> tuple[float, float, int]:
    """``timed``, with the process's exit code instead of whether it succeeded. The command runs
    under ``bench/peak_rss.py``, so that its peak is its own, not this process's (see there)."""
    with tempfile.TemporaryDirectory() as scratch, log.open("a") as out:
        peak = Path(scratch) / "peak_rss_kib"
        launcher = [PY, str(ROOT / "bench" / "peak_rss.py"), str(peak)]
        started = time.perf_counter()
        code = subprocess.run(
            launcher + command, env=env, cwd=ROOT, stdout=out, stderr=out
        ).returncode
        seconds = time.perf_counter() - started
        if not peak.exists():  # the launcher itself failed: its error is in the log
            raise RuntimeError(f"{command} could not be run and measured: see {log}")
        return seconds, int(peak.read_text()) / 1024, code


def count(warehouse: Path, sql: str) -> int:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return int(con.execute(sql).fetchone()[0] or 0)


def hold_back(landing: Path, held: Path, period: str) -> int:
    """Move the files (and markers) of ``period`` out of the landing zone."""
    moved = 0
    for file in marked_files(landing, load_contracts().values()):
        if file.period == period:
            source = landing / file.relative
            target = held / file.relative
            target.parent.mkdir(parents=True, exist_ok=True)
            source.replace(target)
            Path(f"{source}.ok").replace(Path(f"{target}.ok"))
            moved += 1
    return moved


def land(held: Path, landing: Path) -> None:
    """Copy the held files in, data first and markers last, as a producer does."""
    files = sorted(p for p in held.rglob("*") if p.is_file())
    for marker_last in (False, True):
        for path in files:
            if path.name.endswith(".ok") == marker_last:
                target = landing / path.relative_to(held)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)


def dbt_elapsed(warehouse: Path) -> float:
    results = dbt_target_path(warehouse) / "run_results.json"
    return round(json.loads(results.read_text())["elapsed_time"], 1)


def size_mib(*paths: Path) -> float:
    return sum(p.stat().st_size for p in paths if p.exists()) / 2**20


def pandas_baseline(root: Path, env: dict[str, str], log: Path, feature_seconds: float) -> dict:
    """The pandas baseline in a child process, timed like the stages, checked against the
    platform's table."""
    warehouse, out = Path(env["WAREHOUSE_PATH"]), root / "pandas_features.parquet"
    command = [PY, "bench/pandas_features.py", str(warehouse), str(out)]
    seconds, rss, ok = timed(command, env, log)
    result = {"seconds": round(seconds, 1), "peak_rss_mib": round(rss, 1), "ok": ok}
    if ok:
        result["disagreements"] = pandas_features.disagreements(warehouse, out)
        result["features"] = result["disagreements"].pop("features")
        # How many times faster the platform's feature stage is than pandas.
        result["platform_speedup"] = round(seconds / feature_seconds, 2)
    return result


def bench_size(
    accounts: int,
    months: int,
    root: Path,
    memory_limit: str,
    pandas_max: int,
    floor_retry_limit: str,
) -> dict:
    """One size, in ``root``, which is empty."""
    instance = instance_env(root, os.environ.get("PII_KEY") or "0" * 64)
    env = {**os.environ, **instance, "DUCKDB_MEMORY_LIMIT": memory_limit}
    landing, warehouse = Path(env["LANDING_DIR"]), Path(env["WAREHOUSE_PATH"])
    vault, held, log = Path(env["PII_VAULT_PATH"]), root / "held", root / "bench.log"
    make_instance_home(Path(env["DAGSTER_HOME"]))
    stages: list[Stage] = []

    def stage(
        name: str, command: list[str], rows_sql: str | None = None, runs_dbt: bool = False
    ) -> Stage:
        print(f"  {accounts:>9,} · {name} …", flush=True)
        seconds, rss, ok = timed(command, env, log)
        rows = count(warehouse, rows_sql) if rows_sql and warehouse.exists() else 0
        result = Stage(name, seconds, rows, rss, size_mib(warehouse, vault), ok)
        if runs_dbt and ok:
            result.dbt_seconds = dbt_elapsed(warehouse)
        stages.append(result)
        # Stage by stage as they finish, so a long size stopped part-way still has its figures.
        (root / "stages.json").write_text(json.dumps([s.record() for s in stages], indent=2))
        if not ok:
            raise SystemExit(f"stage {name} failed at {accounts:,} accounts: see {log}")
        return result

    simulate = [PY, "-m", "simulator", "--accounts", str(accounts), "--months", str(months + 1)]
    simulate += ["--end", str(END), "--seed", "42", "--out", str(landing)]
    simulate += ["--truth", str(root / "truth"), "--force"]
    stage("simulate", simulate)
    truth = json.loads((root / "truth" / "defects.json").read_text("utf-8"))
    stages[-1].rows = int(truth["rows_generated"])
    held_files = hold_back(landing, held, str(END))
    # The same 24 months for the one-run measurement, as hard links: ingestion moves a rejected
    # file out of its landing zone, so each run needs a zone of its own.
    one_env = {**env, **instance_env(root / "one_run", env["PII_KEY"])}
    shutil.copytree(landing, one_env["LANDING_DIR"], copy_function=os.link)

    raw_rows = "select sum(rows_read) from ops.load_ledger"
    features = "select count(*) from marts.customer_features"
    stage("ingest", [PY, "bench/stage.py", "ingest"], raw_rows)
    for name in ("features", "dbt"):
        stage(name, [PY, "bench/stage.py", name], raw_rows, runs_dbt=True)
    month = "(select max(as_of_month) from marts.customer_features)"
    stage("ml", [PY, "bench/stage.py", "ml"], f"{features} where as_of_month = {month}")
    stage("publish", [PY, "bench/stage.py", "publish"], "select count(*) from ml.risk_scores")
    pipeline = [s for s in stages if s.name != "simulate"]
    end_to_end = sum(s.seconds for s in pipeline)

    # The floor: compiled outside the clock, run in a child process like the stages.
    manifest = compile_features(warehouse, root / "floor_target")
    (root / "floor.sql").write_text(floor_sql(manifest))
    feature_stage = next(s for s in stages if s.name == "features")
    floor = measure_floor(env, root / "floor.sql", log, floor_retry_limit)
    if floor["ok"]:
        with duckdb.connect(str(warehouse), read_only=True) as con:
            floor["disagreements"] = feature_disagreements(
                con, "marts.customer_features", FLOOR_TABLE
            )
        floor["features_vs_floor"] = round(feature_stage.seconds / floor["seconds"], 2)
    if accounts <= pandas_max:
        baseline = pandas_baseline(root, env, log, feature_stage.seconds)
    else:
        baseline = {"skipped": f"more than --pandas-max {pandas_max:,} accounts"}
    one = one_run(one_env, log, warehouse)
    add_floor_multiples(floor, end_to_end, one)

    land(held, landing)
    parts_file = root / "increment_parts.json"
    increment = stage("increment", [PY, "bench/stage.py", "increment", str(parts_file)], raw_rows)
    parts = json.loads(parts_file.read_text())

    return {
        "accounts": accounts,
        "months": months,
        "memory_limit": memory_limit,
        "stages": [s.record() for s in stages],
        "end_to_end_seconds": round(end_to_end, 1),
        "peak_rss_mib": round(max(s.peak_rss_mib for s in pipeline), 1),
        "warehouse_mib": round(size_mib(warehouse), 1),
        "floor": floor,
        "pandas": baseline,
        "one_run": one,
        "increment": {
            "files": held_files,
            "seconds": round(increment.seconds, 1),
            "share_of_full_run": round(increment.seconds / end_to_end, 3),
            # Per part; the rest of the stage is its start-up and the runs' bookkeeping.
            "parts": parts,
            # A month's models and publishing: the full run does them once too, so the
            # increment cannot take a smaller share of it than these.
            "ml_and_publish_share": round((parts["ml"] + parts["publish"]) / end_to_end, 3),
        },
    }


def one_run(env: dict[str, str], log: Path, staged: Path) -> dict:
    """The pipeline as `make run` runs it, in one process: every month's files and the whole
    warehouse (one dbt build, tests included), then the last month's models and publishing.
    The staged figures add each stage's start-up and split dbt in two; this is what a user
    waits for. Its customer features are checked against the staged run's; its warehouse is
    then deleted, or the size would need twice the disk."""
    make_instance_home(Path(env["DAGSTER_HOME"]))
    parts_file = Path(env["DAGSTER_HOME"]).parent / "run_parts.json"
    seconds, rss, ok = timed([PY, "bench/stage.py", "run", str(parts_file)], env, log)
    result = {"seconds": round(seconds, 1), "peak_rss_mib": round(rss, 1), "ok": ok}
    warehouse = Path(env["WAREHOUSE_PATH"])
    if ok:
        result["parts"] = json.loads(parts_file.read_text())
        with duckdb.connect(str(warehouse), read_only=True) as con:
            con.execute(f"ATTACH '{staged}' AS staged (READ_ONLY)")
            result["disagreements"] = feature_disagreements(
                con, "marts.customer_features", "staged.marts.customer_features"
            )
    for name in ("WAREHOUSE_PATH", "PII_VAULT_PATH"):
        Path(env[name]).unlink(missing_ok=True)
    shutil.rmtree(env["PUBLISH_DIR"], ignore_errors=True)  # the analyst snapshot: 5 GiB at 100k
    return result


def measure_floor(env: dict[str, str], sql: Path, log: Path, retry_limit: str) -> dict:
    """The floor, timed, at the stages' memory limit; if DuckDB runs out of memory there, once
    more at ``retry_limit``, with the first attempt's seconds reported beside the second's.

    The floor is one statement: every model's operators at once, where the platform runs them
    one model at a time. At 1,000,000 accounts × 4 months it once ran out of the 4 GiB the
    platform's stages complete in (701f173; it completed at 9584034), and a floor that runs
    out of memory measures nothing. Given more memory it spills less, so its time is, if
    anything, a stricter floor.
    """
    command = [PY, "bench/floor.py", env["WAREHOUSE_PATH"], str(sql)]
    seconds, rss, code = timed_exit(command, env, log)
    limit = env["DUCKDB_MEMORY_LIMIT"]
    result: dict = {}
    if code == OUT_OF_MEMORY and retry_limit:
        result["out_of_memory"] = {"memory_limit": limit, "seconds": round(seconds, 1)}
        limit = retry_limit
        seconds, rss, code = timed_exit(command, {**env, "DUCKDB_MEMORY_LIMIT": limit}, log)
    # A floor that fails otherwise is reported, and the size's other figures are still
    # measured: its one statement spills far more than the platform's models (38 GiB of
    # temporary files at 1,000,000 accounts × 4 months), so on a small disk it fails first.
    return result | {
        "seconds": round(seconds, 1),
        "peak_rss_mib": round(rss, 1),
        "memory_limit": limit,
        "ok": code == 0,
    }


def by_part(parts: dict[str, float], seconds: float) -> str:
    """The parts as "ingest 6.1 s, warehouse 27.3 s, …, start-up and bookkeeping 8.3 s"; the
    rest of ``seconds`` is the stage's start-up and its runs' bookkeeping."""
    rest = seconds - sum(parts.values())
    return ", ".join(
        [f"{part} {s:.1f} s" for part, s in parts.items()]
        + [f"start-up and bookkeeping {rest:.1f} s"]
    )


def add_floor_multiples(floor: dict, end_to_end: float, one: dict) -> None:
    """Add the staged run's seconds (``end_to_end``) and the one run's as multiples of the
    floor's, to ``floor`` and ``one``, where they completed. The floor's SQL never changes, so
    its time measures the machine that hour (155 to 375 s at 100k on this one): benches of
    different days compare by these multiples, not by their seconds."""
    if not floor["ok"]:
        return
    floor["end_to_end_vs_floor"] = round(end_to_end / floor["seconds"], 2)
    if one["ok"]:
        one["vs_floor"] = round(one["seconds"] / floor["seconds"], 2)


def times_floor(record: dict, key: str, before: str, after: str = "") -> str:
    """``record[key]``, a run's seconds over the floor's, as text between ``before`` and
    ``after``; nothing where the floor failed (or a bench older than the figure ran)."""
    if key not in record:
        return ""
    return f"{before}{record[key]:.2f}× the floor{after}"


def table(results: list[dict]) -> str:
    lines = [
        f"{'accounts':>9}  {'stage':<10} {'seconds':>8} {'rows':>12} {'rows/s':>11} "
        f"{'peak RSS':>9} {'warehouse':>10}  of which dbt"
    ]
    for r in results:
        for s in r["stages"]:
            lines.append(
                f"{r['accounts']:>9,}  {s['name']:<10} {s['seconds']:>8.1f} {s['rows']:>12,} "
                f"{s['rows_per_second']:>11,} {s['peak_rss_mib']:>6.0f} MiB "
                f"{s['warehouse_mib']:>6.0f} MiB"
                + (f"  {s['dbt_seconds']:>8.1f} s" if s.get("dbt_seconds") else "")
            )
        floor = r["floor"]
        if floor["ok"]:
            agree = "agrees" if not any(floor["disagreements"].values()) else "DISAGREES"
            against = f"features/floor {floor['features_vs_floor']:.2f}× ({agree})"
            against += times_floor(floor, "end_to_end_vs_floor", ", end to end ")
        else:
            against = "FAILED (see bench.log)"
        if "out_of_memory" in floor:
            first = floor["out_of_memory"]
            against += (
                f"; at {floor['memory_limit']}, after running out of memory at "
                f"{first['memory_limit']} in {first['seconds']:.1f} s"
            )
        increment = r["increment"]
        lines.append(
            f"{r['accounts']:>9,}  end to end {r['end_to_end_seconds']:>7.1f} s ({r['months']} "
            f"months, simulation excluded), peak RSS {r['peak_rss_mib']:.0f} MiB, disk at its "
            f"peak {r.get('disk_peak_mib', 0) / 1024:.1f} GiB; floor "
            f"{floor['seconds']:.1f} s, {against}; increment "
            f"{increment['seconds']:.1f} s = {increment['share_of_full_run']:.0%} "
            "of the full run"
        )
        lines.append(
            f"{r['accounts']:>9,}  increment: {by_part(increment['parts'], increment['seconds'])}"
            f"; its ml and publish alone are {increment['ml_and_publish_share']:.0%} of the full "
            "run, which models and publishes one month too"
        )
        one = r["one_run"]
        if not one["ok"]:
            lines.append(f"{r['accounts']:>9,}  one run: FAILED after {one['seconds']:.1f} s")
        else:
            agree = "agrees" if not any(one["disagreements"].values()) else "DISAGREES"
            lines.append(
                f"{r['accounts']:>9,}  one run (as `make run`, one process) "
                f"{one['seconds']:.1f} s{times_floor(one, 'vs_floor', ' (', ')')}, "
                f"peak RSS {one['peak_rss_mib']:.0f} MiB; "
                f"its customer features {agree.removesuffix('s')} with the staged run's; "
                f"{by_part(one['parts'], one['seconds'])}"
            )
        pandas = r["pandas"]
        if "skipped" in pandas:
            lines.append(f"{r['accounts']:>9,}  pandas: skipped ({pandas['skipped']})")
        elif not pandas["ok"]:
            lines.append(f"{r['accounts']:>9,}  pandas: FAILED after {pandas['seconds']:.1f} s")
        else:
            agree = "agrees" if not pandas["disagreements"]["columns"] else "DISAGREES"
            features = next(s["seconds"] for s in r["stages"] if s["name"] == "features")
            # "0.83× faster" would read as faster: a stage slower than pandas is said so.
            verdict = (
                f"is {pandas['seconds'] / features:.2f}× faster"
                if pandas["seconds"] >= features
                else f"takes {features / pandas['seconds']:.2f}× as long"
            )
            lines.append(
                f"{r['accounts']:>9,}  pandas ({len(pandas['features'])} features) "
                f"{pandas['seconds']:.1f} s, peak RSS {pandas['peak_rss_mib']:.0f} MiB ({agree} on "
                f"{pandas['disagreements']['rows_compared']:,} customer-months); the platform's "
                f"feature stage {verdict}"
            )
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--accounts", default="10000,100000", help="comma-separated sizes")
    p.add_argument("--months", type=int, default=MONTHS, help="months before the increment's")
    p.add_argument("--out", type=Path, default=ROOT / "data" / "bench")
    p.add_argument("--memory-limit", default="4GiB", help="DuckDB's memory_limit, every stage")
    p.add_argument(
        "--floor-retry-memory-limit",
        default="12GiB",
        help="DuckDB's memory_limit for the floor's second try, if it runs out of memory at "
        "--memory-limit (as it did once at 1,000,000 accounts); empty: no second try",
    )
    p.add_argument(
        "--pandas-max",
        type=int,
        default=10000,
        help="largest size the pandas baseline runs at (it holds every reading in memory: "
        "8.6-8.8 GiB at 10,000 accounts, all 68 features)",
    )
    p.add_argument(
        "--no-disk-check",
        dest="disk_check",
        action="store_false",
        help="run even where the free disk looks too small for a size (bench/disk.py)",
    )
    args = p.parse_args()
    sizes = [int(a) for a in args.accounts.split(",")]
    args.out = args.out.resolve()  # Dagster wants DAGSTER_HOME absolute; make passes data/bench
    if args.disk_check:  # before the first size starts: the last may be the one too big
        check_disk(args.out, sizes, args.months)
    results = []
    for accounts in sizes:
        root = size_folder(args.out, accounts)
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        with DiskWatch(root) as disk:
            result = bench_size(
                accounts,
                args.months,
                root,
                args.memory_limit,
                args.pandas_max,
                args.floor_retry_memory_limit,
            )
        results.append(result | {"disk_peak_mib": round(disk.peak_bytes / 2**20, 1)})
        (args.out / "bench.json").write_text(json.dumps(results, indent=2))
    print(table(results))
    print(f"results: {args.out / 'bench.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

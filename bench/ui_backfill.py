"""A whole drop backfilled from the UI's path: `dagster dev` on a fresh instance, its sensors and
schedules stopped, then *Materialize all → all partitions* (the UI's GraphQL mutation) over
every month of a simulated drop, followed to the end. Prints each run and the total.

.venv/bin/python bench/ui_backfill.py --accounts 200 --months 3
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data_contracts import load_contracts  # noqa: E402
from orchestration.graphql import (  # noqa: E402
    all_assets,
    backfill_runs,
    dagster_dev,
    launch_backfill,
    stop_automation,
    wait_for_backfill,
)
from orchestration.partitions import MONTHS, landing_months  # noqa: E402
from orchestration.settings import instance_env, make_instance_home  # noqa: E402
from simulator.cli import simulate  # noqa: E402
from simulator.defects import DefectRates  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--accounts", type=int, default=200)
    p.add_argument("--months", type=int, default=3)
    p.add_argument("--timeout", type=float, default=3600)
    p.add_argument("--keep", type=Path, help="work here instead of a temporary folder")
    args = p.parse_args()
    root = (args.keep or Path(tempfile.mkdtemp(prefix="finegrid-ui-backfill-"))).resolve()
    env = instance_env(root, "0" * 64)
    home, landing = Path(env["DAGSTER_HOME"]), Path(env["LANDING_DIR"])
    make_instance_home(home)
    landing.mkdir(exist_ok=True)
    with dagster_dev(env, root / "dagster.log") as (client, port):
        # The landing zone is empty until the automation is off, so only the backfill runs.
        print(f"dagster dev on :{port}; stopped {stop_automation(client)} sensors and schedules")
        simulate(args.accounts, args.months, 202510, 42, landing, root / "truth", DefectRates())
        months = landing_months(landing, load_contracts().values())
        with dg.DagsterInstance.from_config(str(home)) as instance:
            instance.add_dynamic_partitions(MONTHS.name, months)
        assets = all_assets(client)
        started = time.perf_counter()
        backfill = launch_backfill(client, assets, months)
        status = wait_for_backfill(client, backfill, args.timeout)
        seconds = time.perf_counter() - started
        runs = backfill_runs(client, backfill)
    for run in runs:
        first, last = run["months"]
        span = first if first == last else f"{first}…{last}"
        print(f"  {run['status']:<8} {run['seconds']:6.0f} s  {span}")
    print(
        f"backfill of {len(assets)} assets × {len(months)} months: {status} in {seconds:.0f} s, "
        f"{len(runs)} runs"
    )
    summary = {"status": status, "seconds": round(seconds), "runs": len(runs), "months": months}
    (root / "ui_backfill.json").write_text(json.dumps(summary, indent=2))
    print(f"log and results in {root}")
    return 0 if status == "COMPLETED_SUCCESS" else 1


if __name__ == "__main__":
    sys.exit(main())

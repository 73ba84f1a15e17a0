"""Benchmark the source simulator: N accounts × 24 months, wall time, rows/s, peak RSS, size.

.venv/bin/python bench/bench_simulator.py --accounts 100000
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import tempfile
import time
from pathlib import Path

from simulator.cli import simulate
from simulator.defects import DefectRates

TARGET_SECONDS = 300  # 100k accounts × 24 months within 5 minutes on this 2-core machine


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--accounts", type=int, default=100_000)
    p.add_argument("--months", type=int, default=24)
    p.add_argument("--keep", type=Path, help="write the drop here instead of a temporary folder")
    args = p.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="finegrid-bench-"))
    try:
        started = time.perf_counter()
        s = simulate(
            args.accounts, args.months, 202510, 42, root / "landing", root / "truth", DefectRates()
        )
        seconds = time.perf_counter() - started
        size = sum(f.stat().st_size for f in (root / "landing").rglob("*") if f.is_file())
        result = {
            "accounts": args.accounts,
            "months": args.months,
            "seconds": round(seconds, 1),
            "rows": s["rows_generated"],
            "rows_per_second": round(s["rows_generated"] / seconds),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "landing_mib": round(size / 2**20),
        }
        if args.accounts == 100_000 and args.months == 24:
            result["target_seconds"] = TARGET_SECONDS
            result["target_met"] = seconds <= TARGET_SECONDS
        print(json.dumps(result, indent=1))
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

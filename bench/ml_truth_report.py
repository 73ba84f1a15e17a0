"""Segments and risk scores measured against the simulator's truth.

    python bench/ml_truth_report.py --warehouse data/warehouse.duckdb --truth data/truth
    python bench/ml_truth_report.py --accounts 20000 --months 24   # simulate, run, measure

Reports segment accuracy (business segment against the intended one), the adjusted Rand index
of clusters against archetypes, and the risk model's AUC against the realised defaults next to
the AUC of the simulator's own default probability on the same customers (the best any model
could do), as JSON and a table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ml.truth import risk_against_truth, segment_agreement


def measure(warehouse: Path, truth_dir: Path) -> dict:
    truth = pl.read_parquet(truth_dir / "accounts.parquet")
    with duckdb.connect(str(warehouse), read_only=True) as con:
        segments = con.execute(
            "SELECT * FROM ml.customer_segments "
            "WHERE as_of_month = (SELECT max(as_of_month) FROM ml.customer_segments)"
        ).pl()
        scores = con.execute(
            "SELECT * FROM ml.risk_scores "
            "WHERE as_of_month = (SELECT max(as_of_month) FROM ml.risk_scores)"
        ).pl()
        runs = con.execute(
            "SELECT model_name, data_window, metrics FROM ml.model_runs ORDER BY created_at DESC"
        ).fetchall()
    latest = {}
    for name, window, metrics in runs:
        latest.setdefault(name, {"data_window": window, "metrics": json.loads(metrics)})
    risk = risk_against_truth(scores, truth)
    return {
        "as_of_month": str(segments["as_of_month"].max()),
        "segments": segment_agreement(segments, truth),
        "risk": risk | {"gap_to_oracle": risk["oracle_auc"] - risk["model_auc"]},
        "holdout": latest.get("risk_gbm_calibrated"),
        "segmentation": latest.get("segmentation_kmeans"),
    }


def simulate_and_run(accounts: int, months: int, seed: int, root: Path) -> tuple[Path, Path]:
    from simulator.cli import simulate
    from simulator.defects import DefectRates

    landing, truth = root / "landing", root / "truth"
    started = time.perf_counter()
    simulate(accounts, months, 202510, seed, landing, truth, DefectRates())
    print(f"simulated {accounts} × {months} in {time.perf_counter() - started:.0f} s", flush=True)
    os.environ.update(
        LANDING_DIR=str(landing),
        WAREHOUSE_PATH=str(root / "warehouse.duckdb"),
        PII_VAULT_PATH=str(root / "vault.duckdb"),
        PUBLISH_DIR=str(root / "publish"),
        MODEL_DIR=str(root / "models"),
        PII_KEY=os.environ.get("PII_KEY") or "ml-truth-report-key",
    )
    os.environ.pop("DAGSTER_HOME", None)
    import dagster as dg

    from orchestration.runner import run_pipeline

    started = time.perf_counter()
    if not run_pipeline(instance=dg.DagsterInstance.ephemeral()).success:
        raise SystemExit("the pipeline failed; see the log above")
    print(f"pipeline in {time.perf_counter() - started:.0f} s", flush=True)
    return root / "warehouse.duckdb", truth


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--warehouse", type=Path)
    p.add_argument("--truth", type=Path)
    p.add_argument("--accounts", type=int, default=20000)
    p.add_argument("--months", type=int, default=24)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out", type=Path, help="where to keep the simulated run (default: a temp dir)")
    args = p.parse_args()
    if args.warehouse:
        if not args.truth:
            p.error("--warehouse needs --truth")
        result = measure(args.warehouse, args.truth)
    else:
        root = args.out or Path(tempfile.mkdtemp(prefix="ml-truth-"))
        result = measure(*simulate_and_run(args.accounts, args.months, args.seed, root))
    print(json.dumps(result, indent=1, default=str))
    s, r = result["segments"], result["risk"]
    print(
        f"\nas of {result['as_of_month']}: {s['customers']} customers\n"
        f"  segment accuracy vs intended segment   {s['segment_accuracy']:.3f}\n"
        f"  ARI clusters vs archetypes             {s['cluster_archetype_ari']:.3f}\n"
        f"  risk AUC (model) vs defaults_next_3m   {r['model_auc']:.3f}\n"
        f"  risk AUC (truth p_default_next_3m)     {r['oracle_auc']:.3f}   "
        f"gap {r['gap_to_oracle']:+.3f} (target ≤ 0.03), {r['defaults']} defaults"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

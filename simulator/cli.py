"""Command line of the simulator."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from data_contracts import load_contracts
from simulator.calendar import month_range
from simulator.defects import DefectRates
from simulator.generate import Simulation
from simulator.population import build_population
from simulator.writer import DropWriter, plan_file_defects

DEFAULT_END = 202510


def _defect(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"--defect wants NAME=RATE, got {text!r}")
    try:
        return name, float(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--defect {name}: {value!r} is not a number") from exc


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m simulator", description=__doc__)
    p.add_argument("--accounts", type=int, default=2000)
    p.add_argument("--months", type=int, default=24)
    p.add_argument("--end", type=int, default=DEFAULT_END, help="last business month, YYYYMM")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", type=Path, default=Path("data/landing"))
    p.add_argument("--truth", type=Path, default=Path("data/truth"))
    p.add_argument(
        "--defect",
        type=_defect,
        action="append",
        default=[],
        help=f"override one defect rate, NAME=RATE; names: {', '.join(DefectRates.names())}",
    )
    p.add_argument("--no-defects", action="store_true", help="a clean drop (then --defect adds)")
    p.add_argument("--force", action="store_true", help="empty --out and --truth first")
    args = p.parse_args(argv)
    if args.accounts < 1 or args.months < 1:
        p.error("--accounts and --months must be at least 1")
    if not (200001 <= args.end <= 209912 and 1 <= args.end % 100 <= 12):
        p.error(f"--end {args.end} is not a YYYYMM month")
    if args.out.resolve() == args.truth.resolve() or args.truth.resolve().is_relative_to(
        args.out.resolve()
    ):
        p.error("--truth must lie outside --out: the truth never enters the landing zone")
    return args


def simulate(
    accounts: int, months: int, end: int, seed: int, out: Path, truth: Path, rates: DefectRates
) -> dict:
    """Write the drop and its truth; return a summary."""
    started = time.perf_counter()
    contracts = load_contracts()
    rng = np.random.default_rng(seed)
    window = month_range(end, months)
    pop = build_population(accounts, months, rng)
    sim = Simulation(pop, window, rng, rates)
    plan = plan_file_defects(contracts, window, rates, np.random.default_rng(seed + 1))
    writer = DropWriter(out, contracts, rates, plan, np.random.default_rng(seed + 2))
    rows = 0
    for month in sim:
        for name, frame in month.tables:
            writer.write(name, month.period, frame)
            rows += len(frame)
            del frame  # before the next table is built: one month's table in memory at a time
    truth.mkdir(parents=True, exist_ok=True)
    sim.truth().write_parquet(truth / "accounts.parquet")
    sim.monthly_energy().write_parquet(truth / "monthly_energy.parquet")
    summary = {
        "accounts": accounts,
        "months": window,
        "seed": seed,
        "rates": {k: getattr(rates, k) for k in DefectRates.names()},
        "files": writer.file_log,
        "rows": dict(sorted((sim.defect_log | writer.row_log).items())),
        "rows_generated": rows,
    }
    (truth / "defects.json").write_text(json.dumps(summary, ensure_ascii=False, indent=1), "utf-8")
    summary["seconds"] = round(time.perf_counter() - started, 1)
    return summary


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    base = DefectRates.none() if args.no_defects else DefectRates()
    try:
        rates = base.with_overrides(dict(args.defect))
    except ValueError as exc:
        print(f"simulator: {exc}", file=sys.stderr)
        return 2
    for folder in (args.out, args.truth):
        if folder.exists() and any(folder.iterdir()):
            if not args.force:
                print(
                    f"simulator: {folder} is not empty; use --force to replace it", file=sys.stderr
                )
                return 2
            shutil.rmtree(folder)
    s = simulate(args.accounts, args.months, args.end, args.seed, args.out, args.truth, rates)
    print(
        f"simulated {s['accounts']} accounts × {len(s['months'])} months "
        f"({s['months'][0]}–{s['months'][-1]}), {s['rows_generated']:,} rows, "
        f"{len(s['files'])} file defects, in {s['seconds']} s → {args.out} (truth: {args.truth})"
    )
    return 0

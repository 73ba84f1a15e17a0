"""``python -m orchestration run|backfill|summary|parse``: the pipeline without the UI (every
month of the landing zone ingested and built; the models and publishing for the last month, or
for every month with ``backfill``), its summary, and the dbt manifest the code location needs."""

from __future__ import annotations

import argparse
import json
import os
import sys

import dagster as dg

from orchestration.settings import Settings


def run(model_months: int | None) -> bool:
    """The pipeline in this process; True when every run and check succeeded."""
    from orchestration.definitions import build_definitions
    from orchestration.lifetime import short_lived
    from orchestration.runner import run_pipeline

    # With DAGSTER_HOME set (the Makefile sets it) runs land in the history `make ui` shows.
    has_home = bool(os.environ.get("DAGSTER_HOME"))
    instance = dg.DagsterInstance.get() if has_home else dg.DagsterInstance.ephemeral()
    defs = build_definitions()
    short_lived()  # the command ends with its runs
    outcome = run_pipeline(defs, instance, model_months=model_months)
    for check in outcome.failed_checks:
        print(
            f"check failed: {check.asset_key.to_user_string()} {check.check_name}", file=sys.stderr
        )
    late = sorted({c.asset_key.to_user_string() for c in outcome.warnings})
    if late:
        print(f"warning: late or missing files by the contracts' deadlines: {', '.join(late)}")
    if not outcome.months:
        print("no marked file in the landing zone: nothing to run", file=sys.stderr)
    return outcome.success


def summary(settings: Settings) -> str:
    """Files by status, rows loaded and quarantined, and where things are."""
    if not settings.warehouse_path.exists():
        return f"no warehouse at {settings.warehouse_path} yet"
    with settings.connect(read_only=True) as con:
        by_status = con.execute(
            """SELECT status, count(*), coalesce(sum(marker_rows), 0),
                      coalesce(sum(rows_loaded), 0), coalesce(sum(rows_quarantined), 0)
               FROM ops.load_ledger GROUP BY 1 ORDER BY 1"""
        ).fetchall()
        per_extract = con.execute(
            """SELECT system || '.' || extract, count(*) FILTER (status = 'loaded'),
                      coalesce(sum(rows_loaded), 0), coalesce(sum(rows_quarantined), 0),
                      count(*) FILTER (status = 'rejected'), count(*) FILTER (status = 'duplicate'),
                      count(*) FILTER (status = 'pending')
               FROM ops.load_ledger GROUP BY 1 ORDER BY 1"""
        ).fetchall()
        unexplained = con.execute(
            """SELECT coalesce(sum(marker_rows - rows_loaded - rows_quarantined), 0)
               FROM ops.load_ledger WHERE status = 'loaded'"""
        ).fetchone()[0]
    lines = [
        f"{'extract':<22}{'files':>6}{'rows loaded':>14}{'quarantined':>13}"
        f"{'rejected':>10}{'duplicate':>11}{'pending':>9}"
    ]
    lines += [
        f"{e:<22}{f:>6}{lo:>14,}{q:>13,}{r:>10}{d:>11}{p:>9}"
        for e, f, lo, q, r, d, p in per_extract
    ]
    lines.append("")
    for status, files, marker_rows, loaded, quarantined in by_status:
        lines.append(
            f"{status:<10} {files:>4} files, marker rows {marker_rows:,}, loaded "
            f"{loaded:,}, quarantined {quarantined:,}"
        )
    lines.append(f"unexplained rows (marker − loaded − quarantined): {unexplained}")
    lines += _warehouse_lines(settings)
    lines += _model_lines(settings)
    lines += _publish_lines(settings)
    lines.append(f"warehouse: {settings.warehouse_path}   vault: {settings.pii_vault_path}")
    lines.append(f"rejected files moved to: {settings.landing_dir / '_rejected'}")
    return "\n".join(lines)


def _warehouse_lines(settings: Settings) -> list[str]:
    """Row counts of the marts, when dbt has built them."""
    with settings.connect(read_only=True) as con:
        tables = con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'marts' "
            "ORDER BY table_name"
        ).fetchall()
        counts = [
            (t, con.execute(f'SELECT count(*) FROM marts."{t}"').fetchone()[0]) for (t,) in tables
        ]
    if not counts:
        return ["", "marts: not built yet"]
    return ["", "marts:"] + [f"  {t:<24}{n:>12,}" for t, n in counts]


def _model_lines(settings: Settings) -> list[str]:
    """Segment sizes and the latest model runs' figures, when the models have run."""
    with settings.connect(read_only=True) as con:
        tables = {
            t
            for (t,) in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'ml'"
            ).fetchall()
        }
        if not {"customer_segments", "model_runs"} <= tables:
            return ["", "models: not run yet"]
        sizes = con.execute(
            """SELECT as_of_month, segment_code, count(*) FROM ml.customer_segments
               WHERE as_of_month = (SELECT max(as_of_month) FROM ml.customer_segments)
               GROUP BY ALL ORDER BY 3 DESC"""
        ).fetchall()
        runs = con.execute(
            """SELECT model_name, data_window, metrics FROM ml.model_runs
               QUALIFY row_number() OVER (PARTITION BY model_name ORDER BY created_at DESC) = 1
               ORDER BY model_name"""
        ).fetchall()
    lines = ["", f"segments as of {sizes[0][0]:%Y-%m}:" if sizes else "segments: none"]
    lines += [f"  {seg:<24}{n:>12,}" for _, seg, n in sizes]
    for _name, window, metrics in runs:
        m = json.loads(metrics)
        if "gbm" in m:
            lines.append(
                f"risk model: holdout AUC {m['gbm']['auc']:.3f} (logistic baseline "
                f"{m['logistic']['auc']:.3f}), KS {m['gbm']['ks']:.3f}, Brier "
                f"{m['gbm']['brier']:.4f}, top-decile lift {m['gbm']['top_decile_lift']:.1f}; "
                f"{window}"
            )
        else:
            lines.append(
                f"segmentation: K {m['k']}, bootstrap ARI "
                f"{ {k: round(v, 2) for k, v in m['stability_ari'].items()} }, "
                f"tree fidelity {m['tree_fidelity']:.3f}"
            )
    return lines


def _publish_lines(settings: Settings) -> list[str]:
    """Tags, target lists and where the published files are, when publishing has run."""
    with settings.connect(read_only=True) as con:
        tables = {
            t
            for (t,) in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'publish'"
            ).fetchall()
        }
        if not {"customer_tags", "campaign_runs"} <= tables:
            return ["", "publishing: not run yet"]
        tags = con.execute(
            """SELECT count(DISTINCT tag_code), count(DISTINCT customer_id), count(*)
               FROM publish.customer_tags
               WHERE as_of_month = (SELECT max(as_of_month) FROM publish.customer_tags)"""
        ).fetchone()
        runs = con.execute(
            """SELECT as_of_month, campaign_code, channel, eligible, targets
               FROM publish.campaign_runs
               WHERE as_of_month = (SELECT max(as_of_month) FROM publish.campaign_runs)
               ORDER BY campaign_code"""
        ).fetchall()
    lines = ["", f"tags: {tags[0]} tags on {tags[1]:,} customers ({tags[2]:,} customer-tags)"]
    if runs:
        lines.append(f"campaign targets {runs[0][0]:%Y-%m} (eligible → targets):")
        lines += [f"  {c:<22}{ch:<15}{e:>7,} → {t:>6,}" for _, c, ch, e, t in runs]
    lines.append(f"published: {settings.publish_dir}/campaigns/, report.html, analytics.duckdb")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m orchestration")
    p.add_argument("command", choices=["run", "backfill", "summary", "parse"])
    p.add_argument(
        "--model-months",
        type=int,
        default=1,
        help="run: the models and publishing for the last N months (default 1)",
    )
    args = p.parse_args(argv)
    if args.command == "parse":
        from orchestration.assets.warehouse import parse_project

        print(f"dbt manifest: {parse_project()}")
        return 0
    settings = Settings.from_env()
    if args.command in ("run", "backfill"):
        ok = run(None if args.command == "backfill" else args.model_months)
        print(summary(settings))
        if not ok:
            print("pipeline: a step or a check failed; see the log above", file=sys.stderr)
            return 1
        return 0
    print(summary(settings))
    return 0

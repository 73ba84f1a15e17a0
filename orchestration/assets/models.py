"""Segmentation and risk scoring as Dagster assets: thin wiring around the ``ml`` library.

They read ``marts.customer_features``, write schema ``ml`` (one as-of month replaced at a
time), record every run in ``ml.model_runs`` and report the quality gate as blocking checks,
so publishing never runs on a model that failed it.
"""

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
import duckdb
import polars as pl

from ml.config import load_config
from ml.months import training_month
from orchestration.assets.ingestion import LEDGER_KEY
from orchestration.assets.policies import RUN_PER_MONTH, WRITER_POOL
from orchestration.partitions import MONTHS, key_month
from orchestration.publish.files import replaced
from orchestration.publish.frames import table_exists
from orchestration.resources import FinegridResource

# The models' library is imported by the functions that run them, not with this module:
# scikit-learn and matplotlib take ~1.5 s to import, and every process that loads the
# platform's definitions (each Dagster run, the ingestion and warehouse runs too) would pay it.
if TYPE_CHECKING:
    from ml.pipeline import GateResult
    from ml.risk import RiskModel

FEATURES = dg.AssetKey(["marts", "customer_features"])
RISK = dg.AssetKey(["ml", "risk_scores"])
SEGMENTS = dg.AssetKey(["ml", "customer_segments"])
PROFILES = dg.AssetKey(["ml", "segment_profiles"])
RISK_CHECKS = ["risk_auc_above_floor"]
SEGMENT_CHECKS = ["tree_fidelity", "no_empty_or_giant_segment", "segment_changes_within_threshold"]

MODEL_RUNS_DDL = """
CREATE TABLE IF NOT EXISTS ml.model_runs (
    run_id VARCHAR PRIMARY KEY,
    model_name VARCHAR,
    config_version VARCHAR,
    created_at TIMESTAMP,
    as_of_month DATE,
    data_window VARCHAR,
    features VARCHAR[],
    metrics JSON,
    gate JSON,
    artifact_path VARCHAR,
    artifact_sha256 VARCHAR,
    dagster_run_id VARCHAR,
    trained_as_of DATE,
    trained_run_id VARCHAR
)"""
# The run that trained the model a run used, and the month of data it was trained as of: the
# run itself when it trained. Added to tables made before the risk model was reused.
MODEL_RUNS_ADDED = {"trained_as_of": "DATE", "trained_run_id": "VARCHAR"}
RISK_MODEL = "risk_gbm_calibrated"
SEGMENTATION_MODEL = "segmentation_kmeans"


def replace_rows(
    con: duckdb.DuckDBPyConnection, table: str, frame: pl.DataFrame, where: str, params: list
) -> None:
    """Idempotent: delete ``where`` then insert ``frame`` in one transaction."""
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {table.split('.')[0]}")
    con.register("incoming", frame.to_arrow())
    try:
        con.execute(f"CREATE TABLE IF NOT EXISTS {table} AS SELECT * FROM incoming LIMIT 0")
        con.execute("BEGIN")
        con.execute(f"DELETE FROM {table} WHERE {where}", params)
        con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM incoming")
        con.execute("COMMIT")
    finally:
        con.unregister("incoming")


def replace_month(con: duckdb.DuckDBPyConnection, table: str, frame: pl.DataFrame) -> None:
    """Idempotent: the table's rows of the frame's as-of month(s) are replaced by the frame."""
    months = frame["as_of_month"].unique().to_list()
    replace_rows(con, table, frame, "as_of_month IN (SELECT unnest(?))", [months])


def record_run(con: duckdb.DuckDBPyConnection, row: dict) -> None:
    con.execute("CREATE SCHEMA IF NOT EXISTS ml")
    con.execute(MODEL_RUNS_DDL)
    for column, kind in MODEL_RUNS_ADDED.items():
        con.execute(f"ALTER TABLE ml.model_runs ADD COLUMN IF NOT EXISTS {column} {kind}")
    cols = list(row)
    con.execute(
        f"INSERT INTO ml.model_runs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
        [row[c] for c in cols],
    )


def _check(result: "GateResult", asset: dg.AssetKey) -> dg.AssetCheckResult:
    from ml.pipeline import nan_to_none

    return dg.AssetCheckResult(
        asset_key=asset,
        check_name=result.name,
        passed=result.passed,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "value": nan_to_none(result.value),
            "threshold": result.threshold,
            "detail": result.detail,
        },
    )


def _features(
    con: duckdb.DuckDBPyConnection, columns: list[str], through: date, since: date = date.min
) -> pl.DataFrame:
    """The features of the months ``since`` … ``through`` (the as-of month): a model never sees
    later data."""
    select = ", ".join(dict.fromkeys(columns))
    return con.execute(
        f"SELECT {select} FROM marts.customer_features WHERE as_of_month BETWEEN ? AND ?",
        [since, through],
    ).pl()


@dataclass(frozen=True)
class RegisteredModel:
    run_id: str
    trained_as_of: date
    artifact_path: Path
    artifact_sha256: str
    model: Any


def _registered_model(
    con: duckdb.DuckDBPyConnection,
    model_name: str,
    version: str,
    trained_as_of: date,
    model_dir: Path,
) -> RegisteredModel | None:
    """The newest model ``model_name`` trained as of ``trained_as_of`` under this config
    version, loaded from the registry with its hash checked (a changed file raises
    ``ArtifactError``); None when there is none, or its file is gone or lies outside today's
    ``MODEL_DIR`` (the month then trains it again)."""
    from ml.registry import load_artifact

    if not table_exists(con, "ml", "model_runs"):
        return None
    info = con.execute("SELECT name FROM pragma_table_info('ml.model_runs')").fetchall()
    if not set(MODEL_RUNS_ADDED) <= {name for (name,) in info}:
        return None
    row = con.execute(
        """SELECT run_id, artifact_path, artifact_sha256 FROM ml.model_runs
           WHERE model_name = ? AND config_version = ? AND trained_as_of = ?
             AND trained_run_id = run_id
           ORDER BY created_at DESC LIMIT 1""",
        [model_name, version, trained_as_of],
    ).fetchone()
    if row is None:
        return None
    path = Path(row[1])
    if not (path.is_file() and path.resolve().is_relative_to(model_dir.resolve())):
        return None
    return RegisteredModel(
        row[0], trained_as_of, path, row[2], load_artifact(path, row[2], model_dir)
    )


def _train_as_of(
    features: pl.DataFrame,
    config: dict,
    trained_as_of: date,
    month: date,
    log: dg.DagsterLogManager,
) -> tuple["RiskModel", date]:
    """Train on the months up to ``trained_as_of``; when they hold too little history, as of the
    scored month itself (which raises ``NotEnoughHistory`` in turn)."""
    from ml.pipeline import train_risk
    from ml.risk import NotEnoughHistory

    try:
        model = train_risk(features.filter(pl.col("as_of_month") <= trained_as_of), config)
    except NotEnoughHistory as exc:
        if trained_as_of == month:
            raise
        log.warning(f"{month}: as of {trained_as_of} {exc}; training as of {month}")
        return train_risk(features, config), month
    return model, trained_as_of


# The tables the models write, declared so that a month the models skip (the first months of a
# backfill) still leaves them in place, empty, for publishing and the dbt publish marts to read.
ML_TABLES_DDL = (
    """CREATE TABLE IF NOT EXISTS ml.risk_scores (customer_id VARCHAR, as_of_month DATE,
        risk_probability DOUBLE, risk_grade VARCHAR, top_reasons VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS ml.customer_segments (customer_id VARCHAR, as_of_month DATE,
        segment_code VARCHAR, cluster_id VARCHAR, confidence DOUBLE, reason VARCHAR)""",
)


def _skipped(
    finegrid: FinegridResource,
    keys: list[dg.AssetKey],
    checks: list[str],
    month: date,
    reason: str,
):
    """An as-of month the models cannot serve yet: recorded as skipped, writing no rows, so
    publishing for it finds no segments and skips too. The gate is reported as not evaluated."""
    with finegrid.connect() as con:
        con.execute("CREATE SCHEMA IF NOT EXISTS ml")
        for ddl in ML_TABLES_DDL:
            con.execute(ddl)
    for key in keys:
        yield dg.MaterializeResult(
            asset_key=key, metadata={"as_of_month": str(month), "skipped": reason}
        )
    for name in checks:
        yield dg.AssetCheckResult(
            asset_key=keys[0],
            check_name=name,
            passed=True,
            metadata={"evaluated": False, "detail": f"skipped: {reason}"},
        )


def _run_metadata(month: date, customers: int, run_id: str) -> dict:
    return {"as_of_month": str(month), "customers": customers, "model_run": run_id}


def _metrics_table(metrics: dict[str, dict[str, float]]) -> str:
    names = ["auc", "pr_auc", "ks", "brier", "top_decile_lift", "positives", "n"]
    lines = ["| model | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for model, m in metrics.items():
        lines.append(f"| {model} | " + " | ".join(f"{m[k]:.4g}" for k in names) + " |")
    return "\n".join(lines)


@dg.asset(
    key=RISK,
    deps=[FEATURES, LEDGER_KEY],
    group_name="ml",
    kinds={"scikit-learn", "duckdb"},
    description="Calibrated 3-month payment-risk probability, credit grade (A–E) and top reasons "
    "for every open customer of the partition's as-of month (ml.risk_scores), from the model "
    "trained as of the schedule's last training month at or before it (retrain_every_months in "
    "ml/config/risk.yaml), taken from the registry or trained in this run on the months up to "
    "it; every run is recorded in ml.model_runs. A month with too little history to train is "
    "recorded as skipped.",
    check_specs=[dg.AssetCheckSpec(name, asset=RISK, blocking=True) for name in RISK_CHECKS],
    partitions_def=MONTHS,
    backfill_policy=RUN_PER_MONTH,
    pool=WRITER_POOL,
)
def risk_scores(
    context: dg.AssetExecutionContext, finegrid: FinegridResource
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    from ml import plots
    from ml.pipeline import nan_to_none, risk_gate, score_risk
    from ml.registry import save_artifact
    from ml.risk import NotEnoughHistory

    config = load_config("risk")
    settings = finegrid.settings()
    month = key_month(context.partition_key)
    keys = ["customer_id", "as_of_month", "status_code", "arrears_max_days_overdue"]
    anchor = training_month(month, config["retrain_every_months"])
    with finegrid.connect(read_only=True) as con:
        # The month the schedule trains as of always trains (a re-run of it learns again from
        # what the warehouse now holds); the months after it score with its model.
        registered = (
            None
            if anchor == month
            else _registered_model(con, RISK_MODEL, config["version"], anchor, settings.model_dir)
        )
        if registered is None:
            features = _features(con, keys + config["features"], month)
        else:  # the month alone, with the columns the model was trained on
            features = _features(con, keys + registered.model.features, month, since=month)
    if features.filter(pl.col("as_of_month") == month).is_empty():
        yield from _skipped(
            finegrid, [RISK], RISK_CHECKS, month, f"no customer features for {month}"
        )
        return
    run_id = f"risk-{month:%Y%m}-{uuid.uuid4().hex[:8]}"
    if registered is not None:
        model, trained_as_of = registered.model, registered.trained_as_of
        trained_run, path, sha = (
            registered.run_id,
            registered.artifact_path,
            registered.artifact_sha256,
        )
    else:
        if anchor != month:
            context.log.info(
                f"{month}: no registered risk model trained as of {anchor}: training it"
            )
        try:
            model, trained_as_of = _train_as_of(features, config, anchor, month, context.log)
        except NotEnoughHistory as exc:
            context.log.warning(f"{month}: {exc}")
            yield from _skipped(finegrid, [RISK], RISK_CHECKS, month, str(exc))
            return
        trained_run = run_id
        path, sha = save_artifact(model, settings.model_dir, run_id, "risk_model")
    scores = score_risk(model, features, month, config)
    data_window = f"{model.split.describe()}; score {month:%Y-%m}"
    if trained_run != run_id:
        data_window += f" with the model of run {trained_run}"
    gate = risk_gate(model, config["gate"])
    with finegrid.connect() as con:
        replace_month(con, "ml.risk_scores", scores)
        record_run(
            con,
            {
                "run_id": run_id,
                "model_name": RISK_MODEL,
                "config_version": config["version"],
                "created_at": datetime.now(UTC).replace(tzinfo=None),
                "as_of_month": month,
                "data_window": data_window,
                "features": model.features,
                "metrics": json.dumps(model.metrics),
                "gate": json.dumps([g.__dict__ for g in gate], default=nan_to_none),
                "artifact_path": str(path),
                "artifact_sha256": sha,
                "dagster_run_id": context.run.run_id,
                "trained_as_of": trained_as_of,
                "trained_run_id": trained_run,
            },
        )
    grades = scores["risk_grade"].value_counts().sort("risk_grade")
    m = model.metrics
    yield dg.MaterializeResult(
        asset_key=RISK,
        metadata={
            **_run_metadata(month, len(scores), run_id),
            "trained_as_of": str(trained_as_of),
            "trained_in_run": trained_run,
            "data_window": data_window,
            "holdout_auc_gbm": m["gbm"]["auc"],
            "holdout_auc_logistic": m["logistic"]["auc"],
            "metrics": dg.MetadataValue.md(_metrics_table(m)),
            "grades": dg.MetadataValue.md("\n".join(f"- {g}: {n}" for g, n in grades.iter_rows())),
            "top_features": ", ".join(model.top_features),
            "roc": dg.MetadataValue.md(plots.roc(model.roc, {k: v["auc"] for k, v in m.items()})),
            "calibration": dg.MetadataValue.md(plots.calibration(*model.calibration_curve)),
        },
    )
    for result in gate:
        yield _check(result, RISK)


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            SEGMENTS,
            deps=[FEATURES, RISK],
            group_name="ml",
            kinds={"scikit-learn", "duckdb"},
            description="One primary business segment per open customer of the partition's "
            "as-of month, with its k-means cluster (found as of the schedule's last training "
            "month, retrain_every_months in ml/config/segmentation.yaml), a confidence and a "
            "reason (ml.customer_segments); the explanation tree's rules go to PUBLISH_DIR.",
        ),
        dg.AssetSpec(
            PROFILES,
            deps=[FEATURES, LEDGER_KEY],
            group_name="ml",
            kinds={"duckdb"},
            description="Each cluster's centre in original units, size and share "
            "(ml.segment_profiles).",
        ),
    ],
    check_specs=[dg.AssetCheckSpec(n, asset=SEGMENTS, blocking=True) for n in SEGMENT_CHECKS],
    partitions_def=MONTHS,
    backfill_policy=RUN_PER_MONTH,
    pool=WRITER_POOL,
)
def customer_segments(
    context: dg.AssetExecutionContext, finegrid: FinegridResource
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    from ml import plots
    from ml import segmentation as seg
    from ml.pipeline import (
        nan_to_none,
        run_segmentation,
        segment_change_share,
        segment_gate,
        segmentation_frame,
    )
    from ml.registry import save_artifact

    config, mapping = load_config("segmentation"), load_config("segment_mapping")
    thresholds = load_config("risk")["gate"]
    settings = finegrid.settings()
    month = key_month(context.partition_key)
    version = f"{config['version']} / mapping {mapping['version']}"
    anchor = training_month(month, config["retrain_every_months"])
    query = "SELECT * FROM marts.customer_features WHERE as_of_month = ?"
    with finegrid.connect(read_only=True) as con:
        features = con.execute(query, [month]).pl()
        scores = (
            con.execute("SELECT * FROM ml.risk_scores WHERE as_of_month = ?", [month]).pl()
            if table_exists(con, "ml", "risk_scores")
            else pl.DataFrame()
        )
        previous = _previous_segments(con, month)
        # As the risk model: the schedule's training month clusters its customers, the months
        # after it place theirs in its clusters.
        registered = (
            None
            if anchor == month
            else _registered_model(con, SEGMENTATION_MODEL, version, anchor, settings.model_dir)
        )
        at_anchor = (
            con.execute(query, [anchor]).pl() if anchor != month and registered is None else None
        )
    if scores.is_empty():
        reason = f"no risk scores for {month} (the risk model skipped or has not run)"
        yield from _skipped(finegrid, [SEGMENTS, PROFILES], SEGMENT_CHECKS, month, reason)
        return
    run_id = f"segments-{month:%Y%m}-{uuid.uuid4().hex[:8]}"
    found, trained_as_of, trained_run = None, month, run_id
    if registered is not None:
        found, trained_as_of = registered.model["clusters"], registered.trained_as_of
        trained_run = registered.run_id
    elif at_anchor is not None:
        frame = segmentation_frame(at_anchor, anchor)
        if frame.is_empty():
            context.log.warning(f"{month}: no customers as of {anchor}; clustering as of {month}")
        else:
            context.log.info(f"{month}: no registered clusters as of {anchor}: finding them")
            found, trained_as_of = seg.cluster_all(frame, config), anchor
    run = run_segmentation(features, scores, config, mapping, month, found)
    change = segment_change_share(run.segments, previous)
    gate = segment_gate(run, change, thresholds)
    path, sha = save_artifact(
        {"clusters": run.clusters, "tree": run.explanation.tree},
        settings.model_dir,
        run_id,
        "segmentation",
    )
    rules_file = _write_rules(settings.publish_dir, month, run.explanation.rules_text, mapping)
    data_window = f"features as of {month:%Y-%m}"
    if trained_as_of != month or trained_run != run_id:
        data_window += f"; clusters found as of {trained_as_of:%Y-%m} in run {trained_run}"
    with finegrid.connect() as con:
        replace_month(con, "ml.customer_segments", run.segments.drop("rule_index"))
        replace_month(con, "ml.segment_profiles", run.profiles)
        record_run(
            con,
            {
                "run_id": run_id,
                "model_name": SEGMENTATION_MODEL,
                "config_version": version,
                "created_at": datetime.now(UTC).replace(tzinfo=None),
                "as_of_month": month,
                "data_window": data_window,
                "features": [f["name"] for f in config["features"]],
                "metrics": json.dumps(
                    {
                        "k": {c.population: c.k for c in run.clusters},
                        "stability_ari": {c.population: c.stability_ari for c in run.clusters},
                        "tree_fidelity": run.explanation.fidelity,
                        "segment_change_share": change,
                        "skewness": {c.population: c.evidence.to_dicts() for c in run.clusters},
                    }
                ),
                "gate": json.dumps([g.__dict__ for g in gate], default=nan_to_none),
                "artifact_path": str(path),
                "artifact_sha256": sha,
                "dagster_run_id": context.run.run_id,
                "trained_as_of": trained_as_of,
                "trained_run_id": trained_run,
            },
        )
    sizes = run.segments["segment_code"].value_counts().sort("segment_code")
    yield dg.MaterializeResult(
        asset_key=SEGMENTS,
        metadata={
            **_run_metadata(month, len(run.segments), run_id),
            "clusters_found_as_of": str(trained_as_of),
            "clusters_found_in_run": trained_run,
            "segments": dg.MetadataValue.md("\n".join(f"- {s}: {n}" for s, n in sizes.iter_rows())),
            "k": json.dumps({c.population: c.k for c in run.clusters}),
            "bootstrap_stability_ari": json.dumps(
                {c.population: round(c.stability_ari, 3) for c in run.clusters}
            ),
            "tree_fidelity": run.explanation.fidelity,
            "tree_rules": dg.MetadataValue.md(f"```\n{run.explanation.rules_text}\n```"),
            "rules_file": str(rules_file),
            "preprocessing_evidence": dg.MetadataValue.md(_evidence(run.clusters)),
            "k_selection": dg.MetadataValue.md(
                plots.k_selection({c.population: c.selection for c in run.clusters})
            ),
        },
    )
    yield dg.MaterializeResult(
        asset_key=PROFILES,
        metadata={
            "clusters": len(run.profiles),
            "profiles": dg.MetadataValue.md(plots.segment_profiles(run.profiles)),
        },
    )
    for result in gate:
        yield _check(result, SEGMENTS)


def _evidence(clusters) -> str:
    """Skewness of each clustering feature before and after its transform, per population."""
    lines = [
        "| population | feature | transform | skew raw | skew used | missing |",
        "|---" * 6 + "|",
    ]
    for c in clusters:
        for r in c.evidence.iter_rows(named=True):
            lines.append(
                f"| {c.population} | {r['feature']} | {r['transform']} | {r['skew_raw']:.2f} "
                f"| {r['skew_used']:.2f} | {r['missing_share']:.1%} |"
            )
    return "\n".join(lines)


def _previous_segments(con: duckdb.DuckDBPyConnection, month: date) -> pl.DataFrame | None:
    """The latest run before this as-of month (a re-run of the month compares with the one
    before it, not with itself)."""
    if not table_exists(con, "ml", "customer_segments"):
        return None
    return con.execute(
        """SELECT customer_id, segment_code FROM ml.customer_segments
           WHERE as_of_month = (SELECT max(as_of_month) FROM ml.customer_segments
                                WHERE as_of_month < ?)""",
        [month],
    ).pl()


def _write_rules(publish_dir: Path, month: date, rules: str, mapping: dict) -> Path:
    path = publish_dir / f"segment_rules_{month:%Y%m}.txt"
    header = (
        f"Segment rules for {month:%Y-%m} (segment mapping {mapping['version']}): a decision "
        "tree that reproduces the segments; each line is one leaf.\n"
        "客户分群规则：复现分群结果的决策树，每行一个叶节点。\n\n"
    )
    with replaced(path) as tmp:
        tmp.write_text(header + rules + "\n", "utf-8")
    return path


def model_assets() -> list[dg.AssetsDefinition]:
    return [risk_scores, customer_segments]

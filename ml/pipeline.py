"""The model run as plain functions: risk first (its grade feeds the segment mapping), then
clusters, business segments, their explanation and the quality gate."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import polars as pl

from ml import risk as risk_lib
from ml import segmentation as seg
from ml.explain import Explanation, explain
from ml.mapping import assign_segments

CLOSED = "9"


def latest_month(features: pl.DataFrame) -> date:
    return features["as_of_month"].max()


def scoring_frame(features: pl.DataFrame, month: date) -> pl.DataFrame:
    """Customers of the as-of month whose account is not closed."""
    return features.filter((pl.col("as_of_month") == month) & (pl.col("status_code") != CLOSED))


@dataclass
class RiskRun:
    model: risk_lib.RiskModel
    scores: pl.DataFrame


def train_risk(features: pl.DataFrame, config: dict) -> risk_lib.RiskModel:
    """The risk model trained on ``features`` (every month of them, labelled from the later
    months among them)."""
    # Row order feeds early stopping's validation split: fix it, so the same data always gives
    # the same model whatever order the warehouse returned the rows in.
    features = features.sort(["as_of_month", "customer_id"])
    label = config["label"]
    labelled = risk_lib.add_labels(features, label["days_overdue"], label["horizon_months"])
    return risk_lib.train(labelled, config)


def score_risk(
    model: risk_lib.RiskModel, features: pl.DataFrame, month: date, config: dict
) -> pl.DataFrame:
    """The open customers of ``month`` scored and graded by ``model``."""
    frame = scoring_frame(features, month).sort("customer_id")
    return risk_lib.score(model, frame, config)


def run_risk(features: pl.DataFrame, config: dict, month: date | None = None) -> RiskRun:
    """Train on ``features`` and score their latest month (or ``month``)."""
    model = train_risk(features, config)
    return RiskRun(model, score_risk(model, features, month or latest_month(features), config))


@dataclass
class SegmentRun:
    as_of_month: date
    clusters: list[seg.PopulationClusters]
    segments: pl.DataFrame  # customer_id, as_of_month, segment_code, cluster_id, confidence, reason
    profiles: pl.DataFrame
    explanation: Explanation


def segmentation_frame(
    features: pl.DataFrame, month: date, scores: pl.DataFrame | None = None
) -> pl.DataFrame:
    """The month's open customers (with their risk score, given ``scores``), in a fixed order:
    k-means initialisation depends on row order."""
    frame = scoring_frame(features, month)
    if scores is not None:
        frame = frame.join(
            scores.select("customer_id", "risk_probability", "risk_grade"),
            on="customer_id",
            how="left",
        )
    return frame.sort("customer_id")


def run_segmentation(
    features: pl.DataFrame,
    scores: pl.DataFrame,
    config: dict,
    mapping: dict,
    month: date,
    found: list[seg.PopulationClusters] | None = None,
) -> SegmentRun:
    """Segments of the month: clusters found on its customers, or, with ``found``, its customers
    placed in clusters found earlier; then the business mapping and the explanation tree."""
    frame = segmentation_frame(features, month, scores)
    clusters = (
        seg.cluster_all(frame, config) if found is None else seg.place_all(frame, found, config)
    )
    assigned = seg.assignments(clusters)
    customers = frame.join(assigned, on="customer_id").join(
        seg.cluster_medians(frame, assigned), on="cluster_id"
    )
    mapped = assign_segments(customers, mapping)
    segments = customers.select("customer_id", "cluster_id").join(mapped, on="customer_id")
    segments = segments.select(
        "customer_id",
        pl.lit(month).alias("as_of_month"),
        "segment_code",
        "cluster_id",
        "confidence",
        "reason",
        "rule_index",
    )
    ordered = customers.join(segments.select("customer_id", "segment_code"), on="customer_id")
    explanation = explain(
        ordered,
        ordered["segment_code"],
        [f["name"] for f in config["features"]],
        seed=config["seed"],
    )
    profiles = seg.profiles(clusters).with_columns(pl.lit(month).alias("as_of_month"))
    return SegmentRun(month, clusters, segments, profiles, explanation)


@dataclass(frozen=True)
class GateResult:
    name: str
    passed: bool
    value: float
    threshold: str
    detail: str


def segment_change_share(current: pl.DataFrame, previous: pl.DataFrame | None) -> float | None:
    """Share of customers in both runs whose segment differs; None without a previous run."""
    if previous is None or previous.is_empty():
        return None
    both = current.join(previous, on="customer_id", suffix="_previous")
    if both.is_empty():
        return None
    return float((both["segment_code"] != both["segment_code_previous"]).mean())


def risk_gate(model: risk_lib.RiskModel, thresholds: dict) -> list[GateResult]:
    """The gate on the model's holdout, with today's thresholds (a model reused from the
    registry is held to them too)."""
    auc = model.metrics["gbm"]["auc"]
    return [
        GateResult(
            "risk_auc_above_floor",
            auc >= thresholds["min_auc"],
            auc,
            f">= {thresholds['min_auc']}",
            f"holdout AUC {auc:.3f} ({model.split.describe()})",
        )
    ]


def segment_gate(
    segments: SegmentRun, change_share: float | None, thresholds: dict
) -> list[GateResult]:
    shares = segments.segments["segment_code"].value_counts(normalize=True)
    lo, hi = shares["proportion"].min(), shares["proportion"].max()
    return [
        GateResult(
            "tree_fidelity",
            segments.explanation.fidelity >= thresholds["min_tree_fidelity"],
            segments.explanation.fidelity,
            f">= {thresholds['min_tree_fidelity']}",
            "share of customers the explanation tree puts in their own segment",
        ),
        GateResult(
            "no_empty_or_giant_segment",
            bool(lo >= thresholds["min_segment_share"] and hi <= thresholds["max_segment_share"]),
            float(hi),
            f"each in [{thresholds['min_segment_share']}, {thresholds['max_segment_share']}]",
            ", ".join(f"{s} {p:.1%}" for s, p in shares.sort("segment_code").iter_rows()),
        ),
        GateResult(
            "segment_changes_within_threshold",
            change_share is None or change_share <= thresholds["max_segment_change_share"],
            float("nan") if change_share is None else change_share,
            f"<= {thresholds['max_segment_change_share']}",
            "no previous run to compare with"
            if change_share is None
            else f"{change_share:.1%} of customers changed segment since the last run",
        ),
    ]


def nan_to_none(value: float) -> float | None:
    return None if value is None or np.isnan(value) else float(value)

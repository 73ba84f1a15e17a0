"""Figures against the simulator's truth folder (tests and the report script only)."""

from __future__ import annotations

import polars as pl
from sklearn.metrics import adjusted_rand_score, roc_auc_score


def segment_agreement(segments: pl.DataFrame, truth: pl.DataFrame) -> dict[str, float]:
    joined = segments.join(truth, left_on="customer_id", right_on="cons_no")
    return {
        "customers": len(joined),
        "segment_accuracy": float((joined["segment_code"] == joined["segment"]).mean()),
        "cluster_archetype_ari": float(
            adjusted_rand_score(joined["archetype"].to_list(), joined["cluster_id"].to_list())
        ),
        "segment_ari": float(
            adjusted_rand_score(joined["segment"].to_list(), joined["segment_code"].to_list())
        ),
    }


def risk_against_truth(scores: pl.DataFrame, truth: pl.DataFrame) -> dict[str, float]:
    """AUC of our probability and of the simulator's own p_default_next_3m (the best any model
    could do) against the realised defaults, on the same active customers."""
    joined = scores.join(
        truth.filter(pl.col("is_active_at_end")), left_on="customer_id", right_on="cons_no"
    )
    y = joined["defaults_next_3m"].cast(pl.Int8).to_numpy()
    return {
        "customers": len(joined),
        "defaults": int(y.sum()),
        "model_auc": float(roc_auc_score(y, joined["risk_probability"].to_numpy())),
        "oracle_auc": float(roc_auc_score(y, joined["p_default_next_3m"].to_numpy())),
    }

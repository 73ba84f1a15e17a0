"""Small PNG charts for the Dagster UI (markdown with an embedded image)."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import polars as pl


def _markdown(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return f"![chart](data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()})"


def k_selection(tables: dict[str, pl.DataFrame]) -> str:
    fig, axes = plt.subplots(1, 3, figsize=(11, 3))
    for name, table in tables.items():
        for ax, metric in zip(
            axes, ("silhouette", "davies_bouldin", "calinski_harabasz"), strict=True
        ):
            ax.plot(table["k"], table[metric], marker="o", label=name)
            chosen = table.filter(pl.col("chosen"))
            ax.scatter(chosen["k"], chosen[metric], s=120, facecolors="none", edgecolors="red")
            ax.set_title(metric.replace("_", " "))
            ax.set_xlabel("K")
    axes[0].legend()
    return _markdown(fig)


def segment_profiles(profiles: pl.DataFrame) -> str:
    centre_cols = [c for c in profiles.columns if c.startswith("centre_")]
    values = profiles.select(centre_cols).to_numpy().astype(float)
    z = (values - values.mean(axis=0)) / np.where(values.std(axis=0) > 0, values.std(axis=0), 1)
    fig, ax = plt.subplots(figsize=(11, 0.45 * len(profiles) + 1.5))
    ax.imshow(z, cmap="RdBu_r", vmin=-2.5, vmax=2.5, aspect="auto")
    ax.set_yticks(
        range(len(profiles)),
        [f"{c} ({n})" for c, n in profiles.select("cluster_id", "size").iter_rows()],
    )
    ax.set_xticks(
        range(len(centre_cols)),
        [c.removeprefix("centre_") for c in centre_cols],
        rotation=60,
        ha="right",
    )
    ax.set_title("cluster centres (z-score across clusters)")
    return _markdown(fig)


def roc(curves: dict[str, tuple[np.ndarray, np.ndarray]], aucs: dict[str, float]) -> str:
    fig, ax = plt.subplots(figsize=(4, 4))
    for name, (fpr, tpr) in curves.items():
        ax.plot(fpr, tpr, label=f"{name} AUC {aucs[name]:.3f}")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(loc="lower right")
    return _markdown(fig)


def calibration(predicted: np.ndarray, observed: np.ndarray) -> str:
    fig, ax = plt.subplots(figsize=(4, 4))
    top = max(float(predicted.max()), float(observed.max()), 0.05)
    ax.plot([0, top], [0, top], color="grey", linestyle=":")
    ax.plot(predicted, observed, marker="o")
    ax.set_xlabel("predicted probability (decile mean)")
    ax.set_ylabel("observed rate")
    ax.set_title("calibration, holdout month")
    return _markdown(fig)

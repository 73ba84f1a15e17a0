"""Features → a numeric matrix for clustering: log transforms for skewed amounts, median
imputation, robust scaling (median / IQR, clipped) and feature weights."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

CLIP = 5.0


@dataclass(frozen=True)
class Preprocessor:
    names: tuple[str, ...]
    log: tuple[bool, ...]
    weights: np.ndarray
    medians: np.ndarray
    scales: np.ndarray

    @classmethod
    def fit(cls, frame: pl.DataFrame, features: list[dict]) -> Preprocessor:
        names = tuple(f["name"] for f in features)
        log = tuple(f.get("transform") == "log1p" for f in features)
        raw = _raw(frame, names, log)
        medians = np.nanmedian(raw, axis=0)
        medians = np.where(np.isnan(medians), 0.0, medians)
        q75, q25 = np.nanpercentile(raw, [75, 25], axis=0)
        iqr = np.where(np.isnan(q75 - q25), 0.0, q75 - q25)
        std = np.nanstd(raw, axis=0)
        # A feature with no spread in its middle half (mostly zeros) is scaled by its std.
        scales = np.where(iqr > 1e-9, iqr, np.where(std > 1e-9, std, 1.0))
        weights = np.array([float(f.get("weight", 1.0)) for f in features])
        return cls(names, log, weights, medians, scales)

    def transform(self, frame: pl.DataFrame) -> np.ndarray:
        raw = _raw(frame, self.names, self.log)
        raw = np.where(np.isnan(raw), self.medians, raw)
        scaled = np.clip((raw - self.medians) / self.scales, -CLIP, CLIP)
        return scaled * self.weights

    def inverse(self, matrix: np.ndarray) -> np.ndarray:
        """Cluster centres back in the features' original units."""
        raw = matrix / self.weights * self.scales + self.medians
        return np.where(np.array(self.log), np.expm1(raw), raw)


def skewness_evidence(frame: pl.DataFrame, features: list[dict]) -> pl.DataFrame:
    """Why each transform: the skewness of a feature as it comes and as it is clustered (after
    the configured log1p), with its share of missing values."""
    rows = []
    for f in features:
        values = frame[f["name"]].cast(pl.Float64).to_numpy().astype(float)
        kept = values[np.isfinite(values)]
        used = np.log1p(np.clip(kept, 0, None)) if f.get("transform") == "log1p" else kept
        rows.append(
            {
                "feature": f["name"],
                "transform": f.get("transform", "none"),
                "skew_raw": _skew(kept),
                "skew_used": _skew(used),
                "missing_share": float(1 - len(kept) / max(len(values), 1)),
            }
        )
    return pl.DataFrame(rows)


def _skew(x: np.ndarray) -> float:
    if len(x) < 3 or np.std(x) == 0:
        return 0.0
    return float(np.mean(((x - x.mean()) / x.std()) ** 3))


def _raw(frame: pl.DataFrame, names: tuple[str, ...], log: tuple[bool, ...]) -> np.ndarray:
    cols = []
    for name, is_log in zip(names, log, strict=True):
        values = frame[name].cast(pl.Float64).to_numpy().astype(float)
        cols.append(np.log1p(np.clip(values, 0, None)) if is_log else values)
    return np.column_stack(cols) if cols else np.empty((len(frame), 0))

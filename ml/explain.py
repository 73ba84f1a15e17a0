"""A shallow decision tree that reproduces the segments, its fidelity, and its rules as text
with Chinese and English feature names."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
from sklearn.tree import DecisionTreeClassifier

from ml.config import feature_catalogue

EXTRA_NAMES = {
    "risk_probability": ("违约风险概率", "3-month arrears risk"),
    "special_flag_code": ("特殊群体代码", "special group code (0 none)"),
    "is_residential_flag": ("是否居民", "residential (1) or not (0)"),
    "is_agricultural": ("是否农业", "agricultural (1) or not (0)"),
}


@dataclass
class Explanation:
    tree: DecisionTreeClassifier
    feature_names: list[str]
    fidelity: float  # share of customers whose tree segment equals their assigned one
    rules_text: str


def tree_inputs(frame: pl.DataFrame, features: list[str]) -> tuple[np.ndarray, list[str]]:
    """The tree's inputs in original units: the clustering features, the risk probability and
    the attributes the mapping reads (as numbers)."""
    cols = [*features, "risk_probability"]
    data = frame.select(
        *[pl.col(c).cast(pl.Float64) for c in cols],
        pl.col("special_flag").cast(pl.Float64).fill_null(0).alias("special_flag_code"),
        pl.col("is_residential").cast(pl.Float64).alias("is_residential_flag"),
        (pl.col("elec_type_code") == "400").cast(pl.Float64).alias("is_agricultural"),
    )
    names = data.columns
    matrix = data.to_numpy().astype(float)
    medians = np.nanmedian(np.where(np.isfinite(matrix), matrix, np.nan), axis=0)
    matrix = np.where(np.isfinite(matrix), matrix, np.nan_to_num(medians))
    return matrix, names


def label(name: str) -> str:
    """'late_bills_12m (近12月逾期次数, count)'."""
    catalogue = feature_catalogue()
    if name in catalogue:
        unit = catalogue[name]["unit"]
        return f"{name} ({catalogue[name]['zh']}{', ' + unit if unit else ''})"
    zh, en = EXTRA_NAMES.get(name, (name, name))
    return f"{name} ({zh}, {en})"


def explain(
    frame: pl.DataFrame, segments: pl.Series, features: list[str], max_depth: int = 5, seed: int = 0
) -> Explanation:
    matrix, names = tree_inputs(frame, features)
    tree = DecisionTreeClassifier(max_depth=max_depth, min_samples_leaf=5, random_state=seed)
    tree.fit(matrix, segments.to_numpy())
    fidelity = float((tree.predict(matrix) == segments.to_numpy()).mean())
    return Explanation(tree, names, fidelity, rules_text(tree, names))


def rules_text(tree: DecisionTreeClassifier, names: list[str]) -> str:
    """One line per leaf: IF conditions THEN segment (customers, purity)."""
    t = tree.tree_
    classes = tree.classes_
    lines: list[str] = []

    def walk(node: int, conds: list[str]) -> None:
        if t.children_left[node] == -1:
            counts = t.value[node][0]
            best = int(np.argmax(counts))
            n = int(t.n_node_samples[node])
            purity = counts[best] / max(counts.sum(), 1e-12)
            when = " AND ".join(conds) or "always"
            lines.append(f"IF {when} THEN {classes[best]}  [{n} customers, {purity:.0%} agree]")
            return
        name = label(names[t.feature[node]])
        thr = t.threshold[node]
        walk(t.children_left[node], [*conds, f"{name} <= {thr:.4g}"])
        walk(t.children_right[node], [*conds, f"{name} > {thr:.4g}"])

    walk(0, [])
    return "\n".join(lines)

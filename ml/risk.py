"""Payment-risk scoring: the customer falls 30+ days into arrears within the next 3 months.

Training is by time: features as of earlier months, labels from the months after them, a
calibration month after the training months and a later holdout month never seen in training.
Gradient boosting is compared with a logistic-regression baseline; both are calibrated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import numpy as np
import polars as pl
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.impute import SimpleImputer
from sklearn.inspection import permutation_importance
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score, roc_curve
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import QuantileTransformer

from ml.explain import label as feature_label
from ml.months import add_month


def add_labels(features: pl.DataFrame, days_overdue: int, horizon: int) -> pl.DataFrame:
    """`label`: 1 when any month-end snapshot in the next ``horizon`` months shows a bill
    ``days_overdue``+ days overdue; null when those months are not all observed."""
    future = features.select("customer_id", "as_of_month", "arrears_max_days_overdue")
    out = features
    for k in range(1, horizon + 1):
        shifted = future.with_columns(
            pl.col("as_of_month").dt.offset_by(f"-{k}mo"),
            pl.col("arrears_max_days_overdue").alias(f"_overdue_{k}"),
        ).drop("arrears_max_days_overdue")
        out = out.join(shifted, on=["customer_id", "as_of_month"], how="left")
    cols = [f"_overdue_{k}" for k in range(1, horizon + 1)]
    observed = pl.all_horizontal([pl.col(c).is_not_null() for c in cols])
    hit = pl.max_horizontal(cols) >= days_overdue
    return out.with_columns(
        pl.when(observed).then(hit.cast(pl.Int8)).otherwise(None).alias("label")
    ).drop(cols)


class NotEnoughHistory(ValueError):
    """The data up to the as-of month is too short to train, calibrate and hold out."""


@dataclass(frozen=True)
class TimeSplit:
    train_months: list[date]
    calibration_month: date
    holdout_months: list[date]
    score_month: date

    @property
    def refit_months(self) -> list[date]:
        """After evaluation the scoring model is refit on every labelled month but the last,
        which calibrates it: the same procedure, on the most recent behaviour."""
        return [*self.train_months, self.calibration_month, *self.holdout_months][:-1]

    def describe(self) -> str:
        refit = self.refit_months
        return (
            f"train {self.train_months[0]:%Y-%m}…{self.train_months[-1]:%Y-%m}, "
            f"calibrate {self.calibration_month:%Y-%m}, "
            f"holdout {self.holdout_months[0]:%Y-%m}…{self.holdout_months[-1]:%Y-%m}; "
            f"scoring model refit {refit[0]:%Y-%m}…{refit[-1]:%Y-%m}, calibrated "
            f"{self.holdout_months[-1]:%Y-%m}"
        )


def time_split(labelled: pl.DataFrame, horizon: int, min_history: int) -> TimeSplit:
    """The last ``horizon`` labelled months are the holdout. The calibration month is the one
    whose label window ends where the holdout begins, and training months come before it: no
    training or calibration label looks into the holdout's label windows, and no holdout
    month is ever fitted on."""
    months = sorted(labelled["as_of_month"].unique().to_list())
    first = months[0]
    with_label = sorted(
        labelled.filter(pl.col("label").is_not_null())["as_of_month"].unique().to_list()
    )
    usable = [m for m in with_label if m >= add_month(first, min_history)]
    holdout = usable[-horizon:]
    calibration = add_month(holdout[0], -horizon) if holdout else None
    train = [m for m in usable if calibration and m < calibration]
    if len(train) < 2 or calibration not in usable:
        raise NotEnoughHistory(
            f"the risk model needs at least {2 * horizon + 3} labelled months after "
            f"{min_history} months of history (2 to train, 1 to calibrate, {horizon} held out); "
            f"the data has {len(usable)}"
        )
    return TimeSplit(train, calibration, holdout, months[-1])


def _matrix(frame: pl.DataFrame, features: list[str]) -> np.ndarray:
    return frame.select([pl.col(c).cast(pl.Float64) for c in features]).to_numpy()


def metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    fpr, tpr, _ = roc_curve(y, p)
    top = np.argsort(-p)[: max(1, len(p) // 10)]
    base = y.mean()
    return {
        "auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "ks": float(np.max(tpr - fpr)),
        "brier": float(brier_score_loss(y, p)),
        "top_decile_lift": float(y[top].mean() / base) if base > 0 else float("nan"),
        "positives": int(y.sum()),
        "n": len(y),
    }


@dataclass
class RiskModel:
    features: list[str]
    split: TimeSplit
    model: CalibratedClassifierCV  # the scoring model (refit after evaluation)
    evaluated: CalibratedClassifierCV  # the model the holdout metrics describe
    baseline: CalibratedClassifierCV
    medians: np.ndarray
    metrics: dict[str, dict[str, float]]
    top_features: list[str] = field(default_factory=list)
    roc: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    calibration_curve: tuple[np.ndarray, np.ndarray] | None = None

    def predict(self, frame: pl.DataFrame) -> np.ndarray:
        return self.model.predict_proba(_matrix(frame, self.features))[:, 1]


def _calibrate(estimator, x: np.ndarray, y: np.ndarray) -> CalibratedClassifierCV:
    method = "isotonic" if y.sum() >= 200 else "sigmoid"
    return CalibratedClassifierCV(FrozenEstimator(estimator), method=method).fit(x, y)


def train(labelled: pl.DataFrame, config: dict) -> RiskModel:
    seed = config["seed"]
    horizon = config["label"]["horizon_months"]
    split = time_split(labelled, horizon, config.get("min_history_months", 3))
    known = labelled.filter(pl.col("label").is_not_null()).sort(["as_of_month", "customer_id"])
    fit = known.filter(pl.col("as_of_month").is_in(split.train_months))
    # A feature never observed in the training months (a 12-month trend in a short history)
    # carries nothing to learn from: it is left out, and the run records which were used.
    features = [c for c in config["features"] if fit[c].drop_nulls().n_unique() > 1]
    cal = known.filter(pl.col("as_of_month") == split.calibration_month)
    hold = known.filter(pl.col("as_of_month").is_in(split.holdout_months))
    x_fit, y_fit = _matrix(fit, features), fit["label"].to_numpy()
    x_cal, y_cal = _matrix(cal, features), cal["label"].to_numpy()
    x_hold, y_hold = _matrix(hold, features), hold["label"].to_numpy()
    if y_fit.sum() < 5 or y_hold.sum() < 1 or y_cal.sum() < 1:
        raise ValueError("too few customers fell into arrears to train and evaluate on")

    boosting = config["boosting"]
    # Both learn from seeded samples of at most max_rows and baseline_max_rows rows (risk.yaml);
    # the baseline is a yardstick.
    rows = _sample(len(x_fit), boosting.get("max_rows"), seed)
    gbm = _gbm(seed, boosting).fit(x_fit[rows], y_fit[rows])
    sample = _sample(len(x_fit), config.get("baseline_max_rows"), seed)
    logit = make_pipeline(
        SimpleImputer(strategy="median"),
        QuantileTransformer(output_distribution="normal", n_quantiles=200, random_state=seed),
        LogisticRegression(max_iter=2000),
    ).fit(x_fit[sample], y_fit[sample])
    model, baseline = _calibrate(gbm, x_cal, y_cal), _calibrate(logit, x_cal, y_cal)

    p_hold, p_base = model.predict_proba(x_hold)[:, 1], baseline.predict_proba(x_hold)[:, 1]
    refit = known.filter(pl.col("as_of_month").is_in(split.refit_months))
    refit = refit[_sample(refit.height, boosting.get("max_rows"), seed)]
    last = known.filter(pl.col("as_of_month") == split.holdout_months[-1])
    # Without both outcomes in the last month there is nothing to calibrate a refit on: the
    # evaluated model scores.
    scorer = (
        _calibrate(
            _gbm(seed, boosting).fit(_matrix(refit, features), refit["label"].to_numpy()),
            _matrix(last, features),
            last["label"].to_numpy(),
        )
        if last["label"].n_unique() == 2
        else model
    )
    result = RiskModel(
        features=features,
        split=split,
        model=scorer,
        evaluated=model,
        baseline=baseline,
        medians=np.nanmedian(x_fit, axis=0),
        metrics={"gbm": metrics(y_hold, p_hold), "logistic": metrics(y_hold, p_base)},
    )
    result.roc = {
        "gbm": roc_curve(y_hold, p_hold)[:2],
        "logistic": roc_curve(y_hold, p_base)[:2],
    }
    result.calibration_curve = _reliability(y_hold, p_hold)
    sample = np.random.default_rng(seed).choice(len(x_hold), min(len(x_hold), 4000), replace=False)
    importance = permutation_importance(
        model, x_hold[sample], y_hold[sample], scoring="roc_auc", n_repeats=3, random_state=seed
    )
    order = np.argsort(-importance.importances_mean)
    result.top_features = [features[i] for i in order[:8] if importance.importances_mean[i] > 0]
    return result


def _sample(n: int, at_most: int | None, seed: int) -> np.ndarray:
    """Row positions: all ``n``, or ``at_most`` of them drawn with ``seed``, in order."""
    if at_most is None or n <= at_most:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, at_most, replace=False))


def _gbm(seed: int, boosting: dict) -> HistGradientBoostingClassifier:
    return HistGradientBoostingClassifier(
        learning_rate=boosting["learning_rate"],
        max_iter=boosting["max_iter"],
        max_leaf_nodes=15,
        min_samples_leaf=40,
        l2_regularization=1.0,
        early_stopping=True,
        validation_fraction=0.15,
        random_state=seed,
    )


def _reliability(y: np.ndarray, p: np.ndarray, bins: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Mean predicted against observed rate per decile of prediction."""
    order = np.argsort(p)
    groups = np.array_split(order, bins)
    return (
        np.array([p[g].mean() for g in groups if len(g)]),
        np.array([y[g].mean() for g in groups if len(g)]),
    )


def grade(probability: np.ndarray, grades: list[dict]) -> list[str]:
    bounds = np.array([g["below"] for g in grades])
    names = np.array([g["grade"] for g in grades], dtype=object)
    return names[np.searchsorted(bounds, probability, side="right")].tolist()


def top_reasons(
    risk: RiskModel, frame: pl.DataFrame, k: int = 3, base: np.ndarray | None = None
) -> list[str]:
    """Per customer, the features that raise the risk most: the drop in probability when each
    of the model's most important features is set to the training median. ``base``: the
    probabilities ``risk.predict(frame)`` gave, when the caller has them (one evaluation of
    the model over every customer fewer)."""
    x = _matrix(frame, risk.features)
    if base is None:
        base = risk.model.predict_proba(x)[:, 1]
    lifts = []
    for name in risk.top_features:
        j = risk.features.index(name)
        changed = x.copy()
        changed[:, j] = risk.medians[j]
        lifts.append(base - risk.model.predict_proba(changed)[:, 1])
    if not lifts:
        return [""] * len(frame)
    lifts_m = np.column_stack(lifts)
    ranked = np.argsort(-lifts_m, axis=1)[:, :k]  # every customer's at once
    labels = [feature_label(name) for name in risk.top_features]
    values = x[:, [risk.features.index(name) for name in risk.top_features]]
    out = []
    for i, best in enumerate(ranked.tolist()):
        lift, value = lifts_m[i], values[i]
        out.append(
            "; ".join(
                f"{labels[j]} = {value[j]:.4g} (+{lift[j]:.0%})" for j in best if lift[j] > 0.005
            )
        )
    return out


def score(risk: RiskModel, frame: pl.DataFrame, config: dict) -> pl.DataFrame:
    """customer_id, as_of_month, risk_probability, risk_grade, top_reasons."""
    p = risk.predict(frame)
    return frame.select("customer_id", "as_of_month").with_columns(
        pl.Series("risk_probability", np.round(p, 6)),
        pl.Series("risk_grade", grade(p, config["grades"]), dtype=pl.String),
        pl.Series("top_reasons", top_reasons(risk, frame, base=p), dtype=pl.String),
    )

"""Unit tests of the ml library on small synthetic frames (no warehouse, no Dagster)."""

from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from sklearn.metrics import adjusted_rand_score

from ml import risk as risk_lib
from ml import segmentation as seg_lib
from ml.config import CONFIG_DIR, ConfigError, feature_catalogue, load_config
from ml.explain import explain, label
from ml.mapping import assign_segments
from ml.months import add_month, training_month
from ml.preprocess import Preprocessor
from ml.registry import ArtifactError, load_artifact, save_artifact
from ml.segmentation import bootstrap_stability, choose_k


def _write(tmp_path: Path, name: str, doc: dict) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), "utf-8")
    return path


@pytest.mark.parametrize("name", ["segmentation", "segment_mapping", "risk"])
def test_the_shipped_rules_files_are_valid(name):
    assert load_config(name)["version"]


def test_a_bad_rules_file_names_file_and_field(tmp_path):
    doc = load_config("segment_mapping")
    doc["rules"][3]["when"][0]["field"] = "cluster.no_such_feature"
    path = _write(tmp_path, "segment_mapping", doc)
    with pytest.raises(ConfigError, match=r"segment_mapping.yaml: rules/3/when/0/field"):
        load_config("segment_mapping", path)
    doc = load_config("segment_mapping")
    doc["rules"][0]["when"][0]["op"] = "drop table"
    with pytest.raises(ConfigError, match=r"rules/0/when/0/op"):
        load_config("segment_mapping", _write(tmp_path, "segment_mapping", doc))
    doc = load_config("segmentation")
    doc["features"][2]["name"] = "cons_name"
    with pytest.raises(ConfigError, match=r"features/2/name: 'cons_name' is no customer feature"):
        load_config("segmentation", _write(tmp_path, "segmentation", doc))
    doc = load_config("risk")
    doc["grades"][0]["below"] = 0.5
    with pytest.raises(ConfigError, match="grades"):
        load_config("risk", _write(tmp_path, "risk", doc))
    doc = load_config("segmentation")
    doc["retrain_every_months"] = 13
    with pytest.raises(
        ConfigError, match=r"segmentation.yaml: retrain_every_months: 13 is greater"
    ):
        load_config("segmentation", _write(tmp_path, "segmentation", doc))
    doc = load_config("risk")
    doc["retrain_every_months"] = 0
    with pytest.raises(ConfigError, match=r"risk.yaml: retrain_every_months: 0 is less than"):
        load_config("risk", _write(tmp_path, "risk", doc))


def test_feature_names_come_from_the_dbt_docs():
    catalogue = feature_catalogue()
    assert catalogue["late_bills_12m"]["zh"] == "近12月逾期次数"
    assert "近12月逾期次数" in label("late_bills_12m")
    for name in load_config("risk")["features"]:
        assert name in catalogue


def test_preprocessing_is_robust_to_skew_missing_values_and_outliers():
    frame = pl.DataFrame(
        {
            "kwh": [1.0, 2.0, 3.0, 4.0, None, 1e9],
            "share": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
            "zeros": [0.0, 0.0, 0.0, 0.0, 0.0, 7.0],
        }
    )
    features = [
        {"name": "kwh", "transform": "log1p", "weight": 2.0},
        {"name": "share"},
        {"name": "zeros"},
    ]
    pre = Preprocessor.fit(frame, features)
    x = pre.transform(frame)
    assert np.isfinite(x).all()
    assert x[4, 0] == 0.0  # missing → the median
    assert abs(x[:, 0]).max() <= 2.0 * 5.0  # clipped, then weighted
    assert x[5, 2] > 0  # a mostly-zero feature still separates its non-zero row
    centres = pre.inverse(pre.transform(frame.head(4)))
    assert np.allclose(centres[:, 1], [0.1, 0.2, 0.3, 0.4])


def test_k_is_chosen_where_the_clusters_are_and_is_stable():
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [6, 0], [0, 6], [6, 6]])
    points = np.vstack([c + rng.normal(0, 0.5, (150, 2)) for c in centres])
    config = {"seed": 1, "k_range": [2, 7], "silhouette_sample": 600, "bootstrap_rounds": 4}
    k, table = choose_k(points, config)
    assert k == 4 and table.filter(pl.col("chosen"))["k"].to_list() == [4]
    from sklearn.cluster import KMeans

    labels = KMeans(4, random_state=1, n_init=5).fit_predict(points)
    assert bootstrap_stability(points, 4, labels, config) > 0.95


def test_customers_are_placed_in_clusters_found_earlier_as_when_clustering():
    rng = np.random.default_rng(3)
    centres = np.array([[0.0, 0.0], [8.0, 0.0], [0.0, 8.0]])

    def frame(n: int, prefix: str) -> pl.DataFrame:
        points = np.vstack([c + rng.normal(0, 0.6, (n, 2)) for c in centres])
        return pl.DataFrame(
            {
                "customer_id": [f"{prefix}{i}" for i in range(len(points))],
                "x": points[:, 0] + 10,
                "y": points[:, 1] + 10,
            }
        )

    config = {
        "seed": 1,
        "k_range": [2, 5],
        "silhouette_sample": 300,
        "bootstrap_rounds": 2,
        "features": [{"name": "x"}, {"name": "y"}],
    }
    earlier = frame(100, "a")
    found = seg_lib.cluster_population(earlier, "residential", config)
    assert found.k == 3
    # Its own customers land where clustering put them, with the same confidence.
    again = seg_lib.place_population(earlier, found)
    assert (again.labels == found.labels).all()
    assert np.allclose(again.confidence, found.confidence)
    # A later month's customers: each in the cluster of the centre it was drawn around, and the
    # clusters as they were (K, centres, stability).
    later = frame(40, "b")
    placed = seg_lib.place_population(later, found)
    assert placed.customer_ids == later["customer_id"].to_list()
    assert (placed.k, placed.stability_ari) == (found.k, found.stability_ari)
    truth = np.repeat(np.arange(3), 40)
    assert adjusted_rand_score(truth, placed.labels) == 1.0
    assert set(placed.labels) == set(found.labels)


def _customers() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "customer_id": ["a", "b", "c", "d", "e"],
            "cluster_id": ["R0", "R1", "R0", "N0", "R1"],
            "cluster_confidence": [0.4, 0.7, 0.9, 0.5, 0.2],
            "risk_probability": [0.45, 0.01, 0.02, 0.05, 0.02],
            "risk_grade": ["E", "A", "A", "B", "A"],
            "special_flag": ["0", "3", "0", "0", "0"],
            "elec_type_code": ["100", "100", "100", "200", "100"],
            "is_residential": [True, True, True, False, True],
            "cluster.kwh_trend_12m": [0.0, 0.03, 0.0, 0.0, 0.03],
            "cluster.valley_share_12m": [0.2, 0.2, 0.2, 0.1, 0.2],
            "cluster.bill_yuan_avg_12m": [100.0, 120.0, 100.0, 9000.0, 120.0],
        }
    )


def test_segment_rules_apply_in_order_with_confidence_and_reason():
    out = assign_segments(_customers(), load_config("segment_mapping"))
    got = dict(zip(out["customer_id"], out["segment_code"], strict=True))
    assert got == {
        "a": "high_risk",  # grade E beats everything
        "b": "special_care",  # an attribute beats the cluster
        "c": "basic_need",
        "d": "high_value_stable",
        "e": "growth_potential",
    }
    row = out.filter(pl.col("customer_id") == "a").row(0, named=True)
    assert row["confidence"] == pytest.approx(0.9) and "45%" in row["reason"]
    assert out.filter(pl.col("customer_id") == "b")["confidence"][0] == 1.0
    assert "R1" in out.filter(pl.col("customer_id") == "e")["reason"][0]
    # a dotted field is one column, read with the others the reasons name
    assert "9,000 yuan a month" in out.filter(pl.col("customer_id") == "d")["reason"][0]


def test_a_reasons_fields_are_the_columns_its_template_names():
    from ml.mapping import reason_fields

    assert reason_fields("cluster {cluster_id}: {cluster.kwh_trend_12m:.1%} ({x!r})") == {
        "cluster_id",
        "cluster.kwh_trend_12m",
        "x",
    }
    assert reason_fields("agricultural irrigation (农业生产)") == set()


def test_the_explanation_tree_reproduces_rule_based_segments():
    rng = np.random.default_rng(3)
    n = 600
    frame = pl.DataFrame(
        {
            "x": rng.uniform(0, 1, n),
            "y": rng.uniform(0, 1, n),
            "risk_probability": rng.uniform(0, 0.5, n),
            "special_flag": rng.choice(["0", "3"], n, p=[0.9, 0.1]),
            "is_residential": rng.random(n) < 0.8,
            "elec_type_code": ["100"] * n,
        }
    )
    segments = pl.Series(
        np.where(
            frame["risk_probability"] >= 0.3,
            "high_risk",
            np.where(
                frame["special_flag"] == "3",
                "special_care",
                np.where(frame["x"] > 0.6, "growth_potential", "basic_need"),
            ),
        )
    )
    result = explain(frame, segments, ["x", "y"], max_depth=4)
    assert result.fidelity > 0.98
    assert "THEN high_risk" in result.rules_text and "risk_probability" in result.rules_text


def _history(n_customers: int = 400, months: int = 14, seed: int = 5) -> pl.DataFrame:
    """Customers with a latent risk: late payers' arrears show 30+ days overdue later."""
    rng = np.random.default_rng(seed)
    risk = rng.normal(-2.5, 1.5, n_customers)
    rows = []
    for m in range(months):
        month = date(2024 + (m // 12), m % 12 + 1, 1)
        q = 1 / (1 + np.exp(-risk))
        overdue = np.where(rng.random(n_customers) < q, rng.integers(30, 90, n_customers), 0)
        late = rng.poisson(q * 15)
        for i in range(n_customers):
            rows.append(
                {
                    "customer_id": f"{i:010d}",
                    "as_of_month": month,
                    "status_code": "1",
                    "arrears_max_days_overdue": int(overdue[i]),
                    "late_bills_12m": int(late[i]),
                    "noise": float(rng.normal()),
                }
            )
    return pl.DataFrame(rows)


def _risk_config(features: list[str]) -> dict:
    """The shipped grades and boosting with a small label window, for the synthetic histories."""
    shipped = load_config("risk")
    return {
        "seed": 0,
        "features": features,
        "label": {"days_overdue": 30, "horizon_months": 3},
        "min_history_months": 2,
        "boosting": shipped["boosting"],
        "grades": shipped["grades"],
    }


def test_labels_look_ahead_three_months_and_stop_where_the_data_stops():
    frame = _history(5, 6)
    labelled = risk_lib.add_labels(frame, 30, 3)
    one = labelled.filter(pl.col("customer_id") == "0000000000").sort("as_of_month")
    overdue = one["arrears_max_days_overdue"].to_list()
    expected = [int(max(overdue[i + 1 : i + 4]) >= 30) for i in range(3)] + [None] * 3
    assert one["label"].to_list() == expected


def test_the_model_of_a_month_is_trained_as_of_the_schedules_last_training_month():
    month = training_month
    # Every three months: as of January, April, July and October.
    assert [month(date(2025, m, 1), 3) for m in (7, 8, 9, 10)] == [date(2025, 7, 1)] * 3 + [
        date(2025, 10, 1)
    ]
    assert month(date(2026, 2, 1), 3) == date(2026, 1, 1)
    assert month(date(2026, 1, 1), 12) == month(date(2026, 12, 1), 12) == date(2026, 1, 1)
    assert month(date(2025, 11, 1), 1) == date(2025, 11, 1)  # 1: every month learns


def test_the_time_split_keeps_the_holdout_out_of_training():
    labelled = risk_lib.add_labels(_history(50, 14), 30, 3)
    split = risk_lib.time_split(labelled, 3, 2)
    # The last three months with three months after them are held out.
    assert split.holdout_months == [date(2024, 9, 1), date(2024, 10, 1), date(2024, 11, 1)]
    assert split.calibration_month == date(2024, 6, 1)
    assert split.train_months == [date(2024, 3, 1), date(2024, 4, 1), date(2024, 5, 1)]
    # No training or calibration label window (month + 1 … month + 3) reaches the holdout's.
    assert add_month(split.calibration_month, 3) <= split.holdout_months[0]
    assert split.score_month == date(2025, 2, 1)
    with pytest.raises(ValueError, match="at least 9 labelled months"):
        risk_lib.time_split(risk_lib.add_labels(_history(20, 10), 30, 3), 3, 2)


def test_the_risk_model_learns_the_latent_risk_and_grades_it():
    config = _risk_config(["late_bills_12m", "noise"])
    labelled = risk_lib.add_labels(_history(months=18), 30, 3)
    model = risk_lib.train(labelled, config)
    m = model.metrics
    assert m["gbm"]["auc"] > 0.7 and m["logistic"]["auc"] > 0.7
    assert 0 <= m["gbm"]["brier"] < 0.25 and m["gbm"]["top_decile_lift"] > 1.5
    assert model.top_features[0] == "late_bills_12m"
    scores = risk_lib.score(
        model, labelled.filter(pl.col("as_of_month") == date(2025, 2, 1)), config
    )
    assert set(scores["risk_grade"]) <= set("ABCDE")
    worst = scores.sort("risk_probability", descending=True).row(0, named=True)
    assert "late_bills_12m" in worst["top_reasons"]
    # The reasons start from the probabilities already computed (the model runs once per top
    # feature more, not once more over every customer) and are those computed afresh.
    month = labelled.filter(pl.col("as_of_month") == date(2025, 2, 1))
    calls, predict = [], model.model.predict_proba
    model.model.predict_proba = lambda x: calls.append(len(x)) or predict(x)
    again = risk_lib.score(model, month, config)
    assert len(calls) == 1 + len(model.top_features)
    assert again["top_reasons"].to_list() == risk_lib.top_reasons(model, month)


def _count_fits(monkeypatch, estimator: type) -> list[int]:
    """The number of rows of each fit of ``estimator``, appended as they happen."""
    fitted: list[int] = []
    fit = estimator.fit

    def counting_fit(self, x, y, *args, **kwargs):
        fitted.append(len(x))
        return fit(self, x, y, *args, **kwargs)

    monkeypatch.setattr(estimator, "fit", counting_fit)
    return fitted


def test_the_logistic_baseline_learns_from_a_capped_seeded_sample(monkeypatch):
    labelled = risk_lib.add_labels(_history(months=18), 30, 3)
    fitted = _count_fits(monkeypatch, risk_lib.LogisticRegression)
    config = _risk_config(["late_bills_12m", "noise"])
    whole = risk_lib.train(labelled, config)
    capped = risk_lib.train(labelled, config | {"baseline_max_rows": 1000})
    assert fitted[0] > 1000 and fitted[1:] == [1000]
    # Still a fair yardstick: the same ranking quality within a little, and the boosted model,
    # which sees every row here (fewer than its own cap), unchanged.
    assert abs(capped.metrics["logistic"]["auc"] - whole.metrics["logistic"]["auc"]) < 0.03
    assert capped.metrics["gbm"] == whole.metrics["gbm"]
    picked = risk_lib._sample(5000, 1000, seed=0)
    assert len(set(picked)) == 1000 and (np.diff(picked) > 0).all()
    assert (picked == risk_lib._sample(5000, 1000, seed=0)).all()
    assert (risk_lib._sample(800, 1000, seed=0) == np.arange(800)).all()


def test_the_boosted_model_learns_and_is_refit_from_capped_seeded_samples(monkeypatch):
    labelled = risk_lib.add_labels(_history(months=18), 30, 3)
    fitted = _count_fits(monkeypatch, risk_lib.HistGradientBoostingClassifier)
    config = _risk_config(["late_bills_12m", "noise"])
    whole = risk_lib.train(labelled, config)
    capped_config = config | {"boosting": config["boosting"] | {"max_rows": 1500}}
    capped = risk_lib.train(labelled, capped_config)
    # The evaluated model, then the refit on more months: each on at most max_rows rows.
    assert len(fitted) == 4 and 1500 < fitted[0] < fitted[1]
    assert fitted[2:] == [1500, 1500]
    assert capped.metrics["gbm"]["auc"] > 0.7
    assert capped.metrics["logistic"] == whole.metrics["logistic"]
    assert capped.metrics["gbm"] == risk_lib.train(labelled, capped_config).metrics["gbm"]


def test_grades_follow_the_configured_bounds():
    grades = load_config("risk")["grades"]
    assert risk_lib.grade(np.array([0.0, 0.029, 0.03, 0.2, 0.3, 0.99]), grades) == [
        "A",
        "A",
        "B",
        "D",
        "E",
        "E",
    ]


def test_metrics_on_a_known_ranking():
    y = np.array([0, 0, 0, 0, 1, 0, 0, 0, 1, 1])
    p = np.linspace(0, 1, 10)
    m = risk_lib.metrics(y, p)
    assert m["auc"] == pytest.approx(18 / 21)  # 18 of the 21 (positive, negative) pairs in order
    assert m["top_decile_lift"] == pytest.approx(1 / 0.3)
    assert 0 < m["ks"] <= 1 and m["positives"] == 3


def test_artifacts_load_only_from_the_registry_and_unchanged(tmp_path):
    root = tmp_path / "models"
    path, sha = save_artifact({"w": [1, 2]}, root, "run-1", "model")
    assert load_artifact(path, sha, root) == {"w": [1, 2]}
    outside = tmp_path / "elsewhere.joblib"
    outside.write_bytes(path.read_bytes())
    with pytest.raises(ArtifactError, match="outside the model registry"):
        load_artifact(outside, sha, root)
    path.write_bytes(path.read_bytes() + b"x")
    with pytest.raises(ArtifactError, match="sha256"):
        load_artifact(path, sha, root)


def test_rules_files_live_in_one_place():
    assert {p.stem for p in CONFIG_DIR.glob("*.yaml")} == {
        "segmentation",
        "segment_mapping",
        "risk",
    }


def test_a_feature_never_observed_in_training_is_left_out():
    config = _risk_config(["late_bills_12m", "noise", "empty"])
    history = _history(months=18).with_columns(pl.lit(None, dtype=pl.Float64).alias("empty"))
    model = risk_lib.train(risk_lib.add_labels(history, 30, 3), config)
    assert model.features == ["late_bills_12m", "noise"]


def test_the_risk_run_does_not_depend_on_row_order():
    from ml.pipeline import run_risk

    config = _risk_config(["late_bills_12m", "noise"])
    history = _history(months=18)
    first = run_risk(history, config).scores.sort("customer_id")
    again = run_risk(history.sample(fraction=1.0, shuffle=True, seed=9), config).scores
    assert first.equals(again.sort("customer_id"))

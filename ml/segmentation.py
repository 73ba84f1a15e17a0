"""K-means customer clusters per population, K chosen by three indices together, with
bootstrap stability; centres reported in original units."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import polars as pl
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.metrics import (
    adjusted_rand_score,
    calinski_harabasz_score,
    davies_bouldin_score,
    silhouette_score,
)

from ml.preprocess import Preprocessor, skewness_evidence


@dataclass
class PopulationClusters:
    population: str
    k: int
    selection: pl.DataFrame  # one row per K tried: silhouette, davies_bouldin, calinski_harabasz
    stability_ari: float  # mean ARI between bootstrap refits and the chosen model
    preprocessor: Preprocessor
    model: KMeans | MiniBatchKMeans
    customer_ids: list[str]
    labels: np.ndarray
    confidence: np.ndarray  # 1 − nearest / second-nearest centre distance, in [0, 1]
    evidence: pl.DataFrame | None = None  # skewness before and after each transform


def _kmeans(k: int, n: int, seed: int, minibatch_above: int) -> KMeans | MiniBatchKMeans:
    if n > minibatch_above:
        return MiniBatchKMeans(n_clusters=k, random_state=seed, batch_size=4096, n_init=5)
    return KMeans(n_clusters=k, random_state=seed, n_init=5)


def choose_k(matrix: np.ndarray, config: dict) -> tuple[int, pl.DataFrame]:
    """Try each K; rank it on silhouette (higher), Davies–Bouldin (lower) and
    Calinski–Harabasz (higher); the best mean rank wins (ties: the smaller K)."""
    seed, (lo, hi) = config["seed"], config["k_range"]
    n = len(matrix)
    rng = np.random.default_rng(seed)
    sample = rng.choice(n, min(n, config.get("silhouette_sample", 4000)), replace=False)
    rows = []
    for k in range(lo, min(hi, n - 1) + 1):
        labels = _kmeans(k, n, seed, config.get("minibatch_above", 20000)).fit_predict(matrix)
        if len(set(labels[sample])) < 2:
            continue
        rows.append(
            {
                "k": k,
                "silhouette": float(silhouette_score(matrix[sample], labels[sample])),
                "davies_bouldin": float(davies_bouldin_score(matrix, labels)),
                "calinski_harabasz": float(calinski_harabasz_score(matrix, labels)),
            }
        )
    if not rows:
        raise ValueError(f"too few distinct customers ({n}) to cluster")
    table = pl.DataFrame(rows).with_columns(
        (
            (
                pl.col("silhouette").rank(descending=True)
                + pl.col("davies_bouldin").rank()
                + pl.col("calinski_harabasz").rank(descending=True)
            )
            / 3
        ).alias("mean_rank")
    )
    best = table.sort(["mean_rank", "k"]).row(0, named=True)["k"]
    return int(best), table.with_columns((pl.col("k") == best).alias("chosen"))


def bootstrap_stability(matrix: np.ndarray, k: int, labels: np.ndarray, config: dict) -> float:
    """Mean ARI between the chosen clustering and refits on bootstrap resamples (each refit
    labels every customer, so the partitions are compared on the same set)."""
    seed, n = config["seed"], len(matrix)
    rng = np.random.default_rng(seed + 1)
    scores = []
    for b in range(config.get("bootstrap_rounds", 8)):
        idx = rng.choice(n, n, replace=True)
        model = _kmeans(k, n, seed + 2 + b, config.get("minibatch_above", 20000)).fit(matrix[idx])
        scores.append(adjusted_rand_score(labels, model.predict(matrix)))
    return float(np.mean(scores))


def _confidence(distances: np.ndarray) -> np.ndarray:
    """Per customer (a row of distances to each centre), how much nearer its cluster is than
    the next: 1 − nearest / second nearest, in [0, 1]."""
    ordered = np.sort(distances, axis=1)
    return np.clip(1.0 - ordered[:, 0] / np.maximum(ordered[:, 1], 1e-12), 0.0, 1.0)


def cluster_population(frame: pl.DataFrame, population: str, config: dict) -> PopulationClusters:
    pre = Preprocessor.fit(frame, config["features"])
    matrix = pre.transform(frame)
    k, table = choose_k(matrix, config)
    model = _kmeans(k, len(matrix), config["seed"], config.get("minibatch_above", 20000))
    labels = model.fit_predict(matrix)
    return PopulationClusters(
        population=population,
        k=k,
        selection=table,
        stability_ari=bootstrap_stability(matrix, k, labels, config),
        preprocessor=pre,
        model=model,
        customer_ids=frame["customer_id"].to_list(),
        labels=labels,
        confidence=_confidence(model.transform(matrix)),
        evidence=skewness_evidence(frame, config["features"]),
    )


def place_population(frame: pl.DataFrame, found: PopulationClusters) -> PopulationClusters:
    """``frame``'s customers placed in clusters found earlier (``found``, from the schedule's
    training month): its preprocessing, centres and K; each customer in the nearest cluster,
    with the same confidence as when clustering."""
    distances = found.model.transform(found.preprocessor.transform(frame))
    return replace(
        found,
        customer_ids=frame["customer_id"].to_list(),
        labels=np.argmin(distances, axis=1).astype(found.labels.dtype),
        confidence=_confidence(distances),
    )


def cluster_id(population: str, label: int) -> str:
    """'R3' for residential cluster 3, 'N1' for non-residential cluster 1."""
    return f"{population[0].upper()}{int(label)}"


def split_populations(frame: pl.DataFrame, config: dict) -> dict[str, pl.DataFrame]:
    return {
        name: frame.filter(pl.col("elec_type_code").is_in(spec["elec_type_codes"]))
        for name, spec in config["populations"].items()
    }


def cluster_all(frame: pl.DataFrame, config: dict) -> list[PopulationClusters]:
    return [
        cluster_population(part, name, config)
        for name, part in split_populations(frame, config).items()
        if len(part) >= config["k_range"][0] + 2
    ]


def place_all(
    frame: pl.DataFrame, found: list[PopulationClusters], config: dict
) -> list[PopulationClusters]:
    """Every population's customers placed in the clusters found for it (a population that had
    too few customers to cluster then stays unclustered, as in ``cluster_all``)."""
    parts = split_populations(frame, config)
    return [place_population(parts[f.population], f) for f in found if len(parts[f.population])]


def assignments(results: list[PopulationClusters]) -> pl.DataFrame:
    """customer_id, cluster_id, cluster_confidence for every clustered customer."""
    return pl.concat(
        [
            pl.DataFrame(
                {
                    "customer_id": r.customer_ids,
                    "cluster_id": [cluster_id(r.population, x) for x in r.labels],
                    "cluster_confidence": r.confidence,
                },
                schema={
                    "customer_id": pl.String,
                    "cluster_id": pl.String,
                    "cluster_confidence": pl.Float64,
                },
            )
            for r in results
        ]
    )


def profiles(results: list[PopulationClusters]) -> pl.DataFrame:
    """Each cluster: size, share and centre in original units (the k-means centre)."""
    total = sum(len(r.labels) for r in results)
    rows = []
    for r in results:
        centres = r.preprocessor.inverse(r.model.cluster_centers_)
        for label in range(r.k):
            size = int((r.labels == label).sum())
            row = {
                "cluster_id": cluster_id(r.population, label),
                "population": r.population,
                "size": size,
                "share": size / total,
            }
            for j, name in enumerate(r.preprocessor.names):
                row[f"centre_{name}"] = float(centres[label, j])
            rows.append(row)
    return pl.DataFrame(rows)


def cluster_medians(frame: pl.DataFrame, assigned: pl.DataFrame) -> pl.DataFrame:
    """The median of every numeric feature per cluster, columns named `cluster.<feature>`."""
    numeric = [c for c, t in frame.schema.items() if t.is_numeric() and c not in ("customer_id",)]
    return (
        frame.join(assigned.select("customer_id", "cluster_id"), on="customer_id")
        .group_by("cluster_id")
        .agg([pl.col(c).cast(pl.Float64).median().alias(f"cluster.{c}") for c in numeric])
    )

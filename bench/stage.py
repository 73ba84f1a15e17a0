"""One stage of the pipeline, run by the platform's own Dagster assets in this process, so the
benchmark can time it and read its peak memory on its own (``bench/bench_pipeline.py`` runs
each stage as a child process).

    python bench/stage.py ingest|features|dbt|ml|publish|increment|run

Paths come from the environment, as for ``python -m orchestration run``; ``DAGSTER_HOME`` keeps
the month partitions from one stage to the next.
"""

import sys
from pathlib import Path

import dagster as dg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data_contracts import load_contracts  # noqa: E402
from orchestration.definitions import build_definitions  # noqa: E402
from orchestration.partitions import MONTHS, landing_months  # noqa: E402
from orchestration.runner import RANGE_END, RANGE_START, run_months, stage_keys  # noqa: E402

STAGES = ("ingest", "features", "dbt", "ml", "publish", "increment", "run")
FEATURES = dg.AssetKey(["marts", "customer_features"])


def selections(defs: dg.Definitions) -> dict[str, dg.AssetSelection]:
    """What each stage materialises. ``features`` is every model the feature table is built from,
    without their tests; ``dbt`` the rest of the warehouse and every dbt test."""
    graph = defs.resolve_asset_graph()
    build, downstream = stage_keys(defs)
    raw = [k for k in build if (graph.get(k).group_name or "").startswith("raw_")]
    warehouse = [k for k in build if k not in raw]
    feature_path = dg.AssetSelection.assets(FEATURES).upstream().resolve(graph) & set(warehouse)
    ml = [k for k in downstream if graph.get(k).group_name == "ml"]
    publish = [k for k in downstream if k not in ml]
    return {
        "ingest": dg.AssetSelection.assets(*raw),
        "features": dg.AssetSelection.assets(*feature_path).without_checks(),
        "dbt": dg.AssetSelection.assets(*(set(warehouse) - feature_path)).without_checks()
        | dg.AssetSelection.checks_for_assets(*warehouse),
        "ml": dg.AssetSelection.assets(*ml),
        "publish": dg.AssetSelection.assets(*publish),
    }


def main(stage: str) -> int:
    defs = build_definitions()
    settings = defs.resources["finegrid"].settings()
    months = landing_months(settings.landing_dir, load_contracts().values())
    with dg.DagsterInstance.get() as instance:
        known = set(instance.get_dynamic_partitions(MONTHS.name))
        instance.add_dynamic_partitions(MONTHS.name, [m for m in months if m not in known])
        if stage in ("increment", "run"):
            # What the platform does for a month that lands (`run`: for every month, as `make
            # run` does): the files, the warehouse, then the models and publishing for the last.
            landed = months[-1:] if stage == "increment" else months
            outcome = run_months(defs, instance, landed, months[-1:])
            return 0 if outcome.success else 1
        selection = selections(defs)[stage]
        job = defs.resolve_implicit_global_asset_job_def()
        if stage in ("ml", "publish"):
            run = {"partition_key": months[-1]}
        else:
            run = {"tags": {RANGE_START: months[0], RANGE_END: months[-1]}}
        graph = defs.resolve_asset_graph()
        subset = job.get_subset(
            asset_selection=selection.resolve(graph),
            asset_check_selection=selection.resolve_checks(graph),
        )
        result = subset.execute_in_process(instance=instance, raise_on_error=False, **run)
        return 0 if result.success else 1


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in STAGES:
        sys.exit(f"usage: python bench/stage.py {'|'.join(STAGES)}")
    sys.exit(main(sys.argv[1]))

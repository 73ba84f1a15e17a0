"""One stage of the pipeline, run by the platform's own Dagster assets in this process, so the
benchmark can time it and read its peak memory on its own (``bench/bench_pipeline.py`` runs
each stage as a child process).

    python bench/stage.py ingest|features|dbt|ml|publish|increment|run [PARTS.json]

Paths come from the environment, as for ``python -m orchestration run``; ``DAGSTER_HOME`` keeps
the month partitions from one stage to the next. With ``PARTS.json``, ``increment`` and ``run``
also write the seconds their steps spent per part of the pipeline (see ``run_parts``).
"""

import json
import sys
from collections.abc import Iterable
from pathlib import Path

import dagster as dg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data_contracts import load_contracts  # noqa: E402
from orchestration.definitions import build_definitions  # noqa: E402
from orchestration.lifetime import short_lived  # noqa: E402
from orchestration.partitions import MONTHS, landing_months  # noqa: E402
from orchestration.runner import (  # noqa: E402
    BUILD_GROUPS,
    RANGE_END,
    RANGE_START,
    run_months,
    stage_keys,
)

STAGES = ("ingest", "features", "dbt", "ml", "publish", "increment", "run")
FEATURES = dg.AssetKey(["marts", "customer_features"])
# The parts of a run, named as the stages: an asset's group says which it belongs to.
PARTS = ("ingest", "warehouse", "ml", "publish")


def part_of(group: str) -> str:
    if group.startswith("raw_"):
        return "ingest"
    if group in BUILD_GROUPS:  # the dbt layers the warehouse build makes
        return "warehouse"
    if group in ("ml", "publish"):
        return group
    raise ValueError(f"no part of the pipeline for the asset group {group!r}")


def step_parts(defs: dg.Definitions) -> dict[str, str]:
    """Each step of the asset job (an op: one asset, a multi-asset such as the dbt build, or a
    check) and the part its assets belong to."""
    graph = defs.resolve_asset_graph()
    parts = {}
    for assets in graph.assets_defs:
        keys = assets.keys or {check.asset_key for check in assets.check_keys}
        found = {part_of(graph.get(key).group_name or "") for key in keys}
        if len(found) != 1:
            raise ValueError(f"step {assets.node_def.name} spans parts {sorted(found)}")
        parts[assets.node_def.name] = found.pop()
    return parts


def run_parts(
    instance: dg.DagsterInstance, run_ids: Iterable[str], parts: dict[str, str]
) -> dict[str, float]:
    """Seconds per part in the runs: each step from its start to its end (the in-process
    executor runs one step at a time, so they add up). What a stage takes beyond them is its
    start-up (imports, definitions) and the runs' own bookkeeping."""
    seconds = dict.fromkeys(PARTS, 0.0)
    for run_id in run_ids:
        started: dict[str, float] = {}
        for record in instance.get_records_for_run(run_id, limit=1_000_000).records:
            entry = record.event_log_entry
            event = entry.dagster_event
            if event is None or entry.step_key is None:
                continue
            if event.event_type == dg.DagsterEventType.STEP_START:
                started[entry.step_key] = entry.timestamp
            elif event.event_type in (
                dg.DagsterEventType.STEP_SUCCESS,
                dg.DagsterEventType.STEP_FAILURE,
            ):
                part = parts[entry.step_key]
                seconds[part] += entry.timestamp - started.pop(entry.step_key)
    return {part: round(s, 1) for part, s in seconds.items()}


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


def main(stage: str, parts_file: Path | None = None) -> int:
    defs = build_definitions()
    settings = defs.resources["finegrid"].settings()
    months = landing_months(settings.landing_dir, load_contracts().values())
    with dg.DagsterInstance.get() as instance:
        short_lived()  # as `python -m orchestration run`
        known = set(instance.get_dynamic_partitions(MONTHS.name))
        instance.add_dynamic_partitions(MONTHS.name, [m for m in months if m not in known])
        if stage in ("increment", "run"):
            # What the platform does for a month that lands (`run`: for every month, as `make
            # run` does): the files, the warehouse, then the models and publishing for the last.
            landed = months[-1:] if stage == "increment" else months
            outcome = run_months(defs, instance, landed, months[-1:])
            if parts_file is not None:
                run_ids = [result.run_id for result in outcome.results]
                parts = run_parts(instance, run_ids, step_parts(defs))
                parts_file.write_text(json.dumps(parts, indent=2))
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
    if len(sys.argv) not in (2, 3) or sys.argv[1] not in STAGES:
        sys.exit(f"usage: python bench/stage.py {'|'.join(STAGES)} [PARTS.json]")
    sys.exit(main(sys.argv[1], Path(sys.argv[2]) if len(sys.argv) == 3 else None))

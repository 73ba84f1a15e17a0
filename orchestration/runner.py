"""Running the pipeline without the UI: the months of a drop, ingested and built in one run,
then the models and publishing month by month, as a backfill from the UI would.

Used by ``python -m orchestration run|backfill`` (``make demo``), the benchmarks and the tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import dagster as dg

from data_contracts import load_contracts
from orchestration.partitions import MONTHS, landing_months

RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
BUILD_GROUPS = ("staging", "intermediate", "marts")


@dataclass
class PipelineOutcome:
    months: list[str]
    results: list[dg.ExecuteInProcessResult] = field(default_factory=list)

    def _failed(self, severity: dg.AssetCheckSeverity) -> list:
        return [
            c
            for r in self.results
            for c in check_evaluations(r)
            if not c.passed and c.severity == severity
        ]

    @property
    def failed_checks(self) -> list:
        """Checks that failed at ERROR severity (the run's outcome)."""
        return self._failed(dg.AssetCheckSeverity.ERROR)

    @property
    def warnings(self) -> list:
        """Checks that failed at WARN severity, e.g. a month's file arriving late."""
        return self._failed(dg.AssetCheckSeverity.WARN)

    @property
    def success(self) -> bool:
        return (
            bool(self.results) and all(r.success for r in self.results) and not (self.failed_checks)
        )


def check_evaluations(result: dg.ExecuteInProcessResult) -> list:
    """Every asset-check evaluation a run reported."""
    return [
        e.asset_check_evaluation_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    ]


def stage_keys(defs: dg.Definitions) -> tuple[list[dg.AssetKey], list[dg.AssetKey]]:
    """(ingestion and warehouse assets, model and publishing assets)."""
    graph = defs.resolve_asset_graph()
    build, downstream = [], []
    for key in sorted(graph.get_all_asset_keys()):
        group = graph.get(key).group_name or ""
        (build if group.startswith("raw_") or group in BUILD_GROUPS else downstream).append(key)
    return build, downstream


def run_months(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    months: Sequence[str],
    model_months: Sequence[str],
    build: bool = True,
) -> PipelineOutcome:
    """Ingest and build ``months`` in one run (unless ``build`` is false), then run the models
    and publishing for each of ``model_months``. Stops at the first failed run: a later month
    never publishes past a failed gate."""
    outcome = PipelineOutcome(list(months))
    if not months:
        return outcome
    instance.add_dynamic_partitions(MONTHS.name, [m for m in months if not _known(instance, m)])
    job = defs.resolve_implicit_global_asset_job_def()
    build_keys, downstream = stage_keys(defs)
    try:
        if build:
            first = job.execute_in_process(
                instance=instance,
                asset_selection=build_keys,
                tags={RANGE_START: months[0], RANGE_END: months[-1]},
                raise_on_error=False,
            )
            outcome.results.append(first)
            if not first.success:
                return outcome
        for month in model_months:
            result = job.execute_in_process(
                instance=instance,
                asset_selection=downstream,
                partition_key=month,
                raise_on_error=False,
            )
            outcome.results.append(result)
            if not result.success:
                break
    finally:
        # The run's writers left their last rows in the write-ahead log (Settings.connect):
        # one checkpoint, so that the file alone holds the run.
        defs.resources["finegrid"].settings().checkpoint()
    return outcome


def _known(instance: dg.DagsterInstance, key: str) -> bool:
    return instance.has_dynamic_partition(MONTHS.name, key)


def run_pipeline(
    defs: dg.Definitions | None = None,
    instance: dg.DagsterInstance | None = None,
    model_months: int | None = 1,
) -> PipelineOutcome:
    """Every month the landing zone holds; the models and publishing for the last
    ``model_months`` of them (all with None: a full backfill)."""
    from orchestration.definitions import build_definitions

    defs = defs or build_definitions()
    instance = instance or dg.DagsterInstance.get()
    settings = defs.resources["finegrid"].settings()
    months = landing_months(settings.landing_dir, load_contracts().values())
    chosen = months if model_months is None else months[-model_months:]
    return run_months(defs, instance, months, chosen)

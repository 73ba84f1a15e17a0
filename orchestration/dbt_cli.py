"""dbt's command line with one change: which ready model or test its threads take first.

dbt scores each node by its level in the graph (its depth from the sources) and, of the nodes
ready at once, starts the shallowest, whatever lies behind it. Here the score is the work still
behind a node, itself included (critical-path list scheduling): the seconds each node took the
last time it ran with this target folder (kept there, in ``node_seconds.json``), or, for a node
never timed, the median of the timed nodes of its kind (with none timed, a table counts 1 and a
view or test 0.1: a build's work is in its tables). The chain readings → daily energy → monthly
usage → features is 57 s of the 100,000-account increment's 73 s build; ordered this way, the
build took 67.3-72.8 s in four runs against 74.5 and 87.5 s in two with dbt's order (same
warehouse, ``docs/performance.md``).

dbt hands every ready node to its thread pool at once, first come, first served, so the score
orders only the nodes that become ready together. Taking a node only when a thread is free for
it was tried: the chain then started at once, but the big leaves of the graph (the load
profile, the orphans) were left to run beside the features at the end, sharing DuckDB's memory
limit with them, and the build took 78.8 s. Tried again on a first increment, ordered by the
full build's seconds (the load profile then weighs enough to start early): 66.2 s against
70.7 s in this order; the next month, ordered by the increment's own seconds, 77.4 s, the
features 24.6 s instead of 8.5 s. Their incremental query alone takes 5.7 s under a 4 GB
memory limit and 16.3 s under 1.5 GB.

`finegrid-dbt` (installed with the project) is dbt with this order; the platform runs it
wherever it runs dbt. Everything else is dbt's own: the arguments, the output, the exit code.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import networkx as nx

from orchestration.publish.files import replaced

HISTORY = "node_seconds.json"
# Untimed, and no node of the kind timed either: what a node weighs against a table.
UNTIMED = {"table": 1.0, "other": 0.1}


def critical_path_scores(graph: nx.DiGraph, seconds: Callable[[str], float]) -> dict[str, float]:
    """dbt's queue scores (lowest first): minus each node's seconds plus the longest chain of
    seconds after it."""
    behind: dict[str, float] = {}
    for node in reversed(list(nx.topological_sort(graph))):
        after = max((behind[child] for child in graph.successors(node)), default=0.0)
        behind[node] = seconds(node) + after
    return {node: -work for node, work in behind.items()}


def kind_of(node: Any) -> str:
    """``table`` for a model dbt writes rows for (a table, an incremental), else ``other``."""
    materialized = getattr(getattr(node, "config", None), "materialized", None)
    is_model = getattr(node, "resource_type", None) == "model"
    return "table" if is_model and materialized not in ("view", "ephemeral") else "other"


def node_seconds(kinds: Mapping[str, str], timed: Mapping[str, float]) -> Callable[[str], float]:
    """Seconds per node: as last timed, else the median of its kind's timed nodes, else
    ``UNTIMED``. ``kinds`` maps each node to its kind (``kind_of``)."""
    by_kind: dict[str, list[float]] = {}
    for node, value in timed.items():
        if node in kinds:
            by_kind.setdefault(kinds[node], []).append(value)
    fallback = {
        kind: statistics.median(by_kind[kind]) if by_kind.get(kind) else UNTIMED[kind]
        for kind in UNTIMED
    }
    return lambda node: timed.get(node, fallback[kinds.get(node, "other")])


def read_history(target: Path) -> dict[str, float]:
    """The seconds each node last took, from the target folder (empty when there is none or
    it cannot be read: the order is then by kind alone, never an error)."""
    try:
        record = json.loads((target / HISTORY).read_text("utf-8"))
        return {str(k): float(v) for k, v in record.items()}
    except (OSError, ValueError, TypeError, AttributeError):
        return {}


def record_history(target: Path, since: float = 0.0) -> None:
    """Fold the seconds of the nodes the invocation ran (its ``run_results.json``, if written
    at or after ``since``, a time.time()) into the target folder's history. A node not run
    keeps its last time."""
    results_path = target / "run_results.json"
    try:
        if results_path.stat().st_mtime < since:
            return  # an earlier command's results: this one ran nothing (a failed start)
        results = json.loads(results_path.read_text("utf-8"))["results"]
        # A node skipped after a failure upstream took no time and would weigh nothing.
        ran = {
            r["unique_id"]: float(r["execution_time"]) for r in results if r["status"] != "skipped"
        }
    except (OSError, ValueError, KeyError, TypeError):
        return  # never fail dbt's command for the order of the next one
    history = read_history(target)
    history.update(ran)
    with replaced(target / HISTORY) as tmp:
        tmp.write_text(json.dumps(history, indent=0, sort_keys=True), "utf-8")


# The commands whose results time what a build does (`compile` and `docs generate` also write
# results, with the seconds compiling took).
TIMED_COMMANDS = ("build", "run", "test", "seed")


def _target_path() -> Path | None:
    from dbt.flags import get_flags

    target = getattr(get_flags(), "TARGET_PATH", None)
    return Path(target) if target else None


def _command() -> str | None:
    from dbt.flags import get_flags

    return getattr(get_flags(), "WHICH", None)


def install() -> None:
    """Make dbt's queue (in this process) score its nodes by critical path."""
    from dbt.graph.queue import GraphQueue

    if not callable(getattr(GraphQueue, "_get_scores", None)):
        raise RuntimeError(
            "dbt's GraphQueue has no _get_scores: this dbt-core is not the pinned one "
            "(orchestration/dbt_cli.py orders its nodes through it)"
        )

    def scores(queue: GraphQueue, graph: nx.DiGraph) -> dict[str, float]:
        target = _target_path()
        timed = read_history(target) if target else {}
        kinds = {}
        for node in graph.nodes:
            found = queue.manifest.nodes.get(node)
            kinds[node] = kind_of(found) if found is not None else "other"
        return critical_path_scores(graph, node_seconds(kinds, timed))

    GraphQueue._get_scores = scores


def main() -> None:
    from dbt.cli.main import cli

    install()
    started = time.time()
    try:
        cli()
    finally:
        target = _target_path()
        if target is not None and target.is_dir() and _command() in TIMED_COMMANDS:
            record_history(target, since=started)


if __name__ == "__main__":
    main()

"""dbt's command line with changes: which ready model or test a free thread takes next, a
DuckDB connection closed without a checkpoint, a new warehouse started from the project's
parse, and fewer walks of the garbage collector (below).

dbt scores each node by its level in the graph (its depth from the sources), and hands every
node to its thread pool as soon as it is ready, first come, first served. A build then starts
its longest chain of work late: at 100,000 accounts the increment's chain is readings → daily
energy → monthly usage → features, 52 s of its 70 s build, and its head waited 7.7 s behind
the staging tables, seeds and tests that were ready before it (in the pool's queue), and the
usage 6 s behind the energy's key test, queued behind the orphans and the activity.

Here a node is taken off dbt's queue only when a thread is free for it, and the queue puts the
nodes of the longest chain first: those whose work before and after them, themselves included,
is within ``CRITICAL_SLACK`` of the longest chain's (critical-path scheduling). Every other node
keeps dbt's order, first ready first served, of the nodes ready at once the one with the most
work behind it first. The seconds of work are those each node took the last time it ran with
this target folder (kept there, in ``node_seconds.json``), or, for a node never timed, the median
of the timed nodes of its kind (with none timed, a table counts 1 and a view or test 0.1: a
build's work is in its tables).

Putting every node in the order of the work behind it (not only the chain's) was tried: the
big leaves of the graph (the load profile, the orphans) were then left to the end, beside the
features, which share DuckDB's memory limit with them (the features' incremental query alone
takes 5.7 s under a 4 GB limit and 16.3 s under 1.5 GB): on the month after, ordered by the
increment's own seconds, its build took 77.4 s against 70.7 s in dbt's order
(``docs/performance.md``).

A second change: dbt's DuckDB connection leaves what it wrote last in the write-ahead log when
it closes, as the platform's own writers do (``Settings.connect``): checkpointing the
100,000-account warehouse costs about 1.1 s however little is left in the log, and every dbt
command paid it on exit (the publish marts' command 8.0 s → 7.0 s without). The log is folded
into the file past DuckDB's threshold and at the end of a pipeline run.

A third: a new warehouse's first dbt command no longer parses the whole project. dbt keeps its
parse (``partial_parse.msgpack`` in the target folder) and re-parses only the files changed
since, but only while the command's ``--vars`` and the profile's connection are those it was
made with, and the warehouse's path was in both: every new warehouse (the first run, each
test's, the bench's) parsed the whole project, ~3.4 s of a ~6.6 s `dbt parse` on two cores.
Now the path comes as ``--warehouse PATH``, an option of this command, which hands it to the
profile in the environment (``WAREHOUSE_PATH``); dbt's check of the connection leaves out the
database file's folder and DuckDB's settings (memory, vacuum), which change nothing a parse
holds (the models compile to the database's name, a key of its own, which stays in the check);
and a target folder with no parse of its own starts from the project's (``DEFAULT_TARGET``,
made by `python -m orchestration parse`, which checks the same way). dbt still checks the rest
(its version, the vars, every file's hash) and parses whole when they differ.

A fourth: Python's collector no longer walks dbt's modules and the command's objects again
and again, nor at exit (``orchestration/lifetime.py``): 0.9-1.0 s less per command at exit.

`finegrid-dbt` (installed with the project) is dbt with these changes; the platform runs it
wherever it runs dbt. Everything else is dbt's own: the arguments, the output, the exit code.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import networkx as nx

from orchestration.publish.files import replaced

DBT_PROJECT_DIR = Path(__file__).resolve().parents[1] / "dbt_project"
# Where `python -m orchestration parse` leaves the manifest the definitions read, and dbt its
# parse of the project.
DEFAULT_TARGET = DBT_PROJECT_DIR / "target"
PARSE_STATE = "partial_parse.msgpack"
WAREHOUSE_OPTION = "--warehouse"
HISTORY = "node_seconds.json"
# Untimed, and no node of the kind timed either: what a node weighs against a table.
UNTIMED = {"table": 1.0, "other": 0.1}
# A node is on the longest chain when the work of the longest chain through it is within this
# share of the longest chain's.
CRITICAL_SLACK = 0.1


def work_behind(graph: nx.DiGraph, seconds: Callable[[str], float]) -> dict[str, float]:
    """Per node, the seconds of the longest chain of work from its start to the build's end."""
    behind: dict[str, float] = {}
    for node in reversed(list(nx.topological_sort(graph))):
        after = max((behind[child] for child in graph.successors(node)), default=0.0)
        behind[node] = seconds(node) + after
    return behind


def critical_path_scores(graph: nx.DiGraph, seconds: Callable[[str], float]) -> dict[str, float]:
    """Minus each node's work behind it (``work_behind``): lowest first, the longest first."""
    return {node: -work for node, work in work_behind(graph, seconds).items()}


def longest_chain(
    graph: nx.DiGraph,
    seconds: Callable[[str], float],
    behind: Mapping[str, float] | None = None,
) -> set[str]:
    """The nodes whose longest chain of work through them, before and after, is within
    ``CRITICAL_SLACK`` of the build's longest (``behind``: ``work_behind``, if computed)."""
    behind = behind if behind is not None else work_behind(graph, seconds)
    before: dict[str, float] = {}
    for node in nx.topological_sort(graph):
        before[node] = max(
            (before[parent] + seconds(parent) for parent in graph.predecessors(node)),
            default=0.0,
        )
    longest = max(behind.values(), default=0.0)
    return {n for n in graph if before[n] + behind[n] >= (1 - CRITICAL_SLACK) * longest > 0}


class ReadyOrder:
    """The order of dbt's queue: the longest chain's nodes first, by the work behind them;
    then the others first ready, first served, of those ready at once the one with the most
    work behind it first. ``score`` is called as a node becomes ready, ``batch`` before each
    set of nodes that become ready at once."""

    def __init__(self, graph: nx.DiGraph, seconds: Callable[[str], float]):
        self.behind = work_behind(graph, seconds)
        self.chain = longest_chain(graph, seconds, self.behind)
        self._batches = itertools.count()
        self._batch = next(self._batches)

    def batch(self) -> None:
        self._batch = next(self._batches)

    def score(self, node: str) -> tuple[int, int, float]:
        if node in self.chain:
            return (0, 0, -self.behind[node])
        return (1, self._batch, -self.behind[node])


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
    """Make dbt (in this process) hand a node to a thread only when one is free, the node
    first in ``ReadyOrder``, and close its DuckDB database without a checkpoint."""
    from dbt.adapters.duckdb.environments import Environment
    from dbt.graph.queue import GraphQueue
    from dbt.task.runnable import GraphRunnableTask

    missing = [
        name
        for cls, name in (
            (GraphQueue, "_get_scores"),
            (GraphQueue, "_find_new_additions"),
            (GraphRunnableTask, "run_queue"),
            (GraphRunnableTask, "handle_job_queue"),
            (Environment, "initialize_db"),
        )
        if not callable(getattr(cls, name, None))
    ]
    if missing:
        raise RuntimeError(
            f"dbt has no {missing}: this dbt-core is not the pinned one "
            "(orchestration/dbt_cli.py builds on them)"
        )

    def scores(queue: GraphQueue, graph: nx.DiGraph) -> dict[str, Any]:
        target = _target_path()
        timed = read_history(target) if target else {}
        kinds = {}
        for node in graph.nodes:
            found = queue.manifest.nodes.get(node)
            kinds[node] = kind_of(found) if found is not None else "other"
        order = ReadyOrder(graph, node_seconds(kinds, timed))
        queue._finegrid_order = order
        return {node: order.score(node) for node in graph.nodes}

    find_new_additions = GraphQueue._find_new_additions

    def add_ready(queue: GraphQueue, candidates: Any) -> None:
        # Called, under the queue's lock, with the children of a node just done: those of
        # them now ready are scored as of now.
        order = getattr(queue, "_finegrid_order", None)
        if order is not None:
            order.batch()
            for node in candidates:
                if node in queue._scores:
                    queue._scores[node] = order.score(node)
        find_new_additions(queue, candidates)

    run_queue = GraphRunnableTask.run_queue

    def run_queue_one_per_free_thread(task: GraphRunnableTask, pool: Any) -> None:
        free = threading.Semaphore(max(1, int(task.config.threads or 1)))
        handle = type(task).handle_job_queue

        def handle_when_free(pool: Any, callback: Callable) -> None:
            free.acquire()

            def done(result: Any) -> None:
                try:
                    callback(result)  # marks the node done: its ready children are queued
                finally:
                    free.release()

            handle(task, pool, done)

        task.handle_job_queue = handle_when_free  # type: ignore[method-assign]
        try:
            run_queue(task, pool)
        finally:
            del task.handle_job_queue

    initialize_db = Environment.initialize_db.__func__  # type: ignore[attr-defined]

    def initialize_db_leaving_the_log(cls: type, creds: Any, plugins: Any = None) -> Any:
        conn = initialize_db(cls, creds, plugins)
        conn.execute("PRAGMA disable_checkpoint_on_shutdown")
        return conn

    GraphQueue._get_scores = scores
    GraphQueue._find_new_additions = add_ready
    GraphRunnableTask.run_queue = run_queue_one_per_free_thread
    Environment.initialize_db = classmethod(initialize_db_leaving_the_log)


def take_warehouse(args: list[str]) -> tuple[list[str], Path | None]:
    """``args`` without ``--warehouse PATH`` (or ``--warehouse=PATH``), and that path,
    absolute."""
    rest: list[str] = []
    warehouse = None
    items = iter(args)
    for arg in items:
        if arg == WAREHOUSE_OPTION:
            value = next(items, None)
            if value is None:
                raise SystemExit(f"finegrid-dbt: {WAREHOUSE_OPTION} needs a path")
            warehouse = Path(value).absolute()
        elif arg.startswith(WAREHOUSE_OPTION + "="):
            warehouse = Path(arg.split("=", 1)[1]).absolute()
        else:
            rest.append(arg)
    return rest, warehouse


def target_of(args: list[str], environ: Mapping[str, str]) -> Path | None:
    """The target folder of a dbt command line (``--target-path``, else ``DBT_TARGET_PATH``),
    if it is given as an absolute path: a relative one is the project's business."""
    value = environ.get("DBT_TARGET_PATH")
    for i, arg in enumerate(args):
        if arg == "--target-path" and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith("--target-path="):
            value = arg.split("=", 1)[1]
    return Path(value) if value and Path(value).is_absolute() else None


def seed_parse_state(target: Path, source: Path = DEFAULT_TARGET) -> bool:
    """Give a target folder that has no parse of the project a copy of ``source``'s; whether
    one was copied. A missing or unreadable source leaves dbt to parse the whole project, as
    it would have."""
    wanted, found = target / PARSE_STATE, source / PARSE_STATE
    if wanted.exists() or not found.exists() or target.resolve() == source.resolve():
        return False
    try:
        with replaced(wanted) as tmp:
            shutil.copyfile(found, tmp)
    except OSError:
        return False
    return True


# What of the profile's connection a parse does not depend on (see the module's docstring).
NOT_PARSED = ("path", "settings")


def parse_profile(connection: Iterable[tuple[str, Any]]) -> str:
    """The text dbt hashes for the profile in its check that a saved parse holds: the
    connection's keys and values, sorted, without ``NOT_PARSED``."""
    import pprint

    return pprint.pformat(sorted((k, v) for k, v in connection if k not in NOT_PARSED))


def install_parse_check() -> None:
    """Make dbt (in this process) check a saved parse against ``parse_profile``."""
    import dataclasses

    from dbt.contracts.files import FileHash
    from dbt.parser.manifest import ManifestLoader

    if getattr(ManifestLoader, "_finegrid_parse_check", False):
        return
    build_check = ManifestLoader.build_manifest_state_check

    def build_manifest_state_check(loader: ManifestLoader) -> Any:
        check = build_check(loader)
        connection = loader.root_project.credentials.connection_info()
        profile_hash = FileHash.from_contents(parse_profile(connection))
        return dataclasses.replace(check, profile_hash=profile_hash)

    ManifestLoader.build_manifest_state_check = build_manifest_state_check  # type: ignore[method-assign]
    ManifestLoader._finegrid_parse_check = True  # type: ignore[attr-defined]


def main() -> None:
    from dbt.cli.main import cli

    from orchestration.lifetime import short_lived

    short_lived()  # dbt's modules live as long as the command
    args, warehouse = take_warehouse(sys.argv[1:])
    if warehouse is not None:
        os.environ["WAREHOUSE_PATH"] = str(warehouse)  # read by profiles.yml
    target = target_of(args, os.environ)
    if target is not None:
        seed_parse_state(target)
    sys.argv[1:] = args
    install()
    install_parse_check()
    started = time.time()
    try:
        cli()
    finally:
        target = _target_path()
        if target is not None and target.is_dir() and _command() in TIMED_COMMANDS:
            record_history(target, since=started)


if __name__ == "__main__":
    main()

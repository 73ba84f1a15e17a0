"""The order in which `finegrid-dbt` (orchestration/dbt_cli.py) starts dbt's models and tests."""

import heapq
import json
import threading
import time
from collections.abc import Callable
from multiprocessing.pool import ThreadPool
from types import SimpleNamespace
from typing import Any

import networkx as nx
import pytest
from dbt.adapters.duckdb.environments import Environment
from dbt.graph.queue import GraphQueue
from dbt.task.runnable import GraphRunnableTask

from orchestration import dbt_cli

# A build's shape: a chain of four tables that ends in the features, and beside it two tables
# that nothing reads, each as heavy as two links of the chain, one at the chain's level.
SECONDS = {"readings": 10.0, "energy": 10.0, "usage": 10.0, "features": 10.0}
SECONDS |= {"profile": 20.0, "bills": 20.0}
SECONDS |= {"stg_readings": 0.5, "stg_curves": 0.5, "test_energy": 1.0}
EDGES = [
    ("stg_readings", "readings"),
    ("readings", "energy"),
    ("energy", "test_energy"),
    ("test_energy", "usage"),
    ("usage", "features"),
    ("stg_curves", "profile"),
]


def _graph() -> nx.DiGraph:
    graph = nx.DiGraph(EDGES)
    graph.add_nodes_from(SECONDS)
    return graph


def _makespan(
    graph: nx.DiGraph,
    score: Callable[[str], Any],
    threads: int = 2,
    batch: Callable[[], None] = lambda: None,
) -> float:
    """A build's length when each free thread takes the ready node of the lowest score, each
    node scored as it becomes ready (``batch`` called before each node's children are)."""
    waiting = {node: graph.in_degree(node) for node in graph}
    ready = [(score(n), n) for n, d in waiting.items() if d == 0]
    heapq.heapify(ready)
    running: list[tuple[float, str]] = []
    now = 0.0
    while ready or running:
        while ready and len(running) < threads:
            _, node = heapq.heappop(ready)
            heapq.heappush(running, (now + SECONDS[node], node))
        now, done = heapq.heappop(running)
        batch()
        for child in graph.successors(done):
            waiting[child] -= 1
            if waiting[child] == 0:
                heapq.heappush(ready, (score(child), child))
    return now


def test_the_longest_chain_of_work_starts_first_and_the_build_ends_sooner():
    graph = _graph()
    scores = dbt_cli.critical_path_scores(graph, SECONDS.__getitem__)
    # Each score is minus the seconds from the node's start to the end of its chain.
    assert scores["readings"] == -41.0
    assert scores["stg_readings"] == -41.5
    assert scores["profile"] == -20.0
    assert scores["stg_readings"] < scores["stg_curves"]
    # dbt's own scores, the level from the sources, start the bills and the profile first (the
    # chain's head is at their levels, and later by name), and the chain waits 20 s for a thread.
    levels = {n: i for i, level in enumerate(nx.topological_generations(graph)) for n in level}
    assert _makespan(graph, levels.__getitem__) == 61.0
    # The chain alone: the other tables fit beside it.
    assert _makespan(graph, scores.__getitem__) == 41.5


def test_the_longest_chain_goes_first_and_the_rest_keeps_the_order_it_became_ready_in():
    graph = _graph()
    seconds = SECONDS.__getitem__
    chain = {"stg_readings", "readings", "energy", "test_energy", "usage", "features"}
    assert dbt_cli.longest_chain(graph, seconds) == chain
    order = dbt_cli.ReadyOrder(graph, seconds)
    # The chain alone: the other tables fit beside it.
    assert _makespan(graph, order.score, batch=order.batch) == 41.5
    # Off the chain, dbt's own first come, first served: the bills, ready at the start, go
    # before a profile heavier than they are that is ready later (behind its staging), where
    # ordering by the work behind each node would put the profile first.
    heavier = {**SECONDS, "profile": 25.0}.__getitem__
    order = dbt_cli.ReadyOrder(graph, heavier)
    bills = order.score("bills")
    order.batch()  # the staging of the curves done
    assert bills < order.score("profile")
    scores = dbt_cli.critical_path_scores(graph, heavier)
    assert scores["profile"] < scores["bills"]
    # The chain's nodes go before any other, whenever ready.
    assert order.score("usage") < bills
    # A chain within the slack of the longest is on it too; one farther off is not.
    graph.add_edge("stg_curves", "curves_tail")
    longer = {**SECONDS, "curves_tail": 38.0}  # 38.5 s through it: within 10 % of 41.5
    assert "stg_curves" in dbt_cli.longest_chain(graph, longer.__getitem__)
    assert "profile" not in dbt_cli.longest_chain(graph, longer.__getitem__)


def test_a_node_never_timed_weighs_as_the_timed_nodes_of_its_kind():
    kinds = {"a": "table", "b": "table", "c": "table", "t": "other", "u": "other"}
    seconds = dbt_cli.node_seconds(kinds, {"a": 2.0, "b": 8.0, "t": 0.3, "gone": 99.0})
    assert seconds("a") == 2.0
    assert seconds("c") == 5.0  # the median of a and b; a node no longer built does not count
    assert seconds("u") == 0.3
    untimed = dbt_cli.node_seconds(kinds, {})
    assert (untimed("c"), untimed("u")) == (1.0, 0.1)


def test_kinds_follow_what_dbt_writes():
    def node(resource_type, materialized):
        return SimpleNamespace(
            resource_type=resource_type, config=SimpleNamespace(materialized=materialized)
        )

    assert dbt_cli.kind_of(node("model", "table")) == "table"
    assert dbt_cli.kind_of(node("model", "incremental")) == "table"
    assert dbt_cli.kind_of(node("model", "view")) == "other"
    assert dbt_cli.kind_of(node("test", "test")) == "other"
    assert dbt_cli.kind_of(node("seed", "seed")) == "other"


def test_the_history_keeps_each_nodes_last_time_and_survives_a_bad_file(tmp_path):
    assert dbt_cli.read_history(tmp_path) == {}
    (tmp_path / dbt_cli.HISTORY).write_text("{not json", "utf-8")
    assert dbt_cli.read_history(tmp_path) == {}

    def ran(**seconds):
        results = [
            {"unique_id": k, "execution_time": v, "status": "success"} for k, v in seconds.items()
        ]
        (tmp_path / "run_results.json").write_text(json.dumps({"results": results}), "utf-8")
        dbt_cli.record_history(tmp_path)

    ran(a=1.5, b=2.0)
    ran(b=3.0, c=0.5)  # a second invocation (the publish marts) ran other nodes
    assert dbt_cli.read_history(tmp_path) == {"a": 1.5, "b": 3.0, "c": 0.5}
    # A command that failed before writing results leaves the last one's where they were.
    results = tmp_path / "run_results.json"
    a_again = {"unique_id": "a", "execution_time": 9.0, "status": "success"}
    results.write_text(json.dumps({"results": [a_again]}))
    dbt_cli.record_history(tmp_path, since=results.stat().st_mtime + 1)
    assert dbt_cli.read_history(tmp_path)["a"] == 1.5
    # A node skipped after an upstream failure keeps its time; unreadable results change nothing.
    skipped = {"unique_id": "b", "execution_time": 0.0, "status": "skipped"}
    results.write_text(json.dumps({"results": [skipped]}))
    dbt_cli.record_history(tmp_path)
    results.write_text(json.dumps({"results": [{"execution_time": 1.0}]}))
    dbt_cli.record_history(tmp_path)
    assert dbt_cli.read_history(tmp_path) == {"a": 1.5, "b": 3.0, "c": 0.5}


@pytest.fixture
def installed(monkeypatch, tmp_path):
    """install() with the history of ``SECONDS``; dbt's classes restored after the test."""
    for cls, name in (
        (GraphQueue, "_get_scores"),
        (GraphQueue, "_find_new_additions"),
        (GraphRunnableTask, "run_queue"),
        (Environment, "initialize_db"),
    ):
        monkeypatch.setattr(cls, name, vars(cls)[name])
    monkeypatch.setattr(dbt_cli, "_target_path", lambda: tmp_path)
    (tmp_path / dbt_cli.HISTORY).write_text(json.dumps(SECONDS), "utf-8")
    dbt_cli.install()


def _queue(seconds: dict[str, float] = SECONDS) -> tuple[GraphQueue, dict]:
    nodes = {n: SimpleNamespace(resource_type="model", config=SimpleNamespace()) for n in seconds}
    manifest = SimpleNamespace(nodes=nodes, expect=nodes.__getitem__)
    graph = _graph()
    graph.add_nodes_from(seconds)
    return GraphQueue(graph, manifest, set(seconds)), nodes


def test_dbts_queue_hands_out_the_chain_first_once_installed(installed):
    queue, nodes = _queue()
    first = queue.get(block=False)
    assert first is nodes["stg_readings"]
    queue.mark_done("stg_readings")
    # The chain's next link is ready after the other roots, and goes first.
    assert queue.get(block=False) is nodes["readings"]


def test_dbt_hands_a_node_to_a_thread_only_when_one_is_free(installed, monkeypatch):
    """With dbt's own run_queue, every ready node went to the pool's queue at once, and the
    chain's next link waited behind all of them; now it is taken when a thread frees."""
    import dbt.task.runnable

    # Two big tables ready at the start beside the chain's head and the curves' staging, which
    # ends well after the chain's head (a unit is 50 ms).
    seconds = {**SECONDS, "arrears": 20.0, "stg_curves": 2.0}
    (dbt_cli._target_path() / dbt_cli.HISTORY).write_text(json.dumps(seconds), "utf-8")

    monkeypatch.setattr(dbt.task.runnable, "get_flags", lambda: SimpleNamespace(FAIL_FAST=False))
    events: list[tuple[str, str]] = []
    lock = threading.Lock()
    running = {"now": 0, "most": 0}

    def run(node_id: str) -> SimpleNamespace:
        with lock:
            events.append(("start", node_id))
            running["now"] += 1
            running["most"] = max(running["most"], running["now"])
        time.sleep(seconds[node_id] / 20)
        with lock:
            events.append(("end", node_id))
            running["now"] -= 1
        return SimpleNamespace(node=SimpleNamespace(unique_id=node_id))

    class Task:  # what dbt's run_queue uses of a task
        config = SimpleNamespace(threads=2)

        def __init__(self):
            self.job_queue, _ = _queue(seconds)

        def handle_job_queue(self, pool, callback):
            node = self.job_queue.get()
            pool.apply_async(
                run, args=[next(k for k, v in nodes.items() if v is node)], callback=callback
            )

        def _raise_set_error(self):
            pass

        def _handle_result(self, result):
            pass

    task = Task()
    nodes = task.job_queue.manifest.nodes
    with ThreadPool(2) as pool:
        GraphRunnableTask.run_queue(task, pool)
    assert {node for kind, node in events if kind == "end"} == set(seconds)
    assert running["most"] == 2
    # Half a unit in, the chain's head done, its next link is taken by the thread that frees,
    # where dbt's pool gave it the bills or the arrears queued before it, and the chain then
    # waited 20 units for a thread.
    assert set(events[:2]) == {("start", "stg_readings"), ("start", "stg_curves")}
    assert events[2] == ("end", "stg_readings")
    assert events[3] == ("start", "readings")
    assert "handle_job_queue" not in vars(task)  # the task's own method back

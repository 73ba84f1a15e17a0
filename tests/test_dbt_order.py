"""The order in which `finegrid-dbt` (orchestration/dbt_cli.py) starts dbt's models and tests."""

import heapq
import json
from types import SimpleNamespace

import networkx as nx
from dbt.graph.queue import GraphQueue

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


def _makespan(graph: nx.DiGraph, scores: dict[str, float], threads: int = 2) -> float:
    """A build's length when each free thread takes the ready node of the lowest score."""
    waiting = {node: graph.in_degree(node) for node in graph}
    ready = [(scores[n], n) for n, d in waiting.items() if d == 0]
    heapq.heapify(ready)
    running: list[tuple[float, str]] = []
    now = 0.0
    while ready or running:
        while ready and len(running) < threads:
            _, node = heapq.heappop(ready)
            heapq.heappush(running, (now + SECONDS[node], node))
        now, done = heapq.heappop(running)
        for child in graph.successors(done):
            waiting[child] -= 1
            if waiting[child] == 0:
                heapq.heappush(ready, (scores[child], child))
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
    assert _makespan(graph, levels) == 61.0
    assert _makespan(graph, scores) == 41.5  # the chain alone: the other tables fit beside it


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


def test_dbts_queue_hands_out_the_chain_first_once_installed(monkeypatch, tmp_path):
    # Restored after the test: install() replaces the method on dbt's class.
    monkeypatch.setattr(GraphQueue, "_get_scores", GraphQueue._get_scores)
    monkeypatch.setattr(dbt_cli, "_target_path", lambda: tmp_path)
    (tmp_path / dbt_cli.HISTORY).write_text(json.dumps(SECONDS), "utf-8")
    dbt_cli.install()

    nodes = {n: SimpleNamespace(resource_type="model", config=SimpleNamespace()) for n in SECONDS}
    manifest = SimpleNamespace(nodes=nodes, expect=nodes.__getitem__)
    queue = GraphQueue(_graph(), manifest, set(SECONDS))
    first = queue.get(block=False)
    assert first is nodes["stg_readings"]
    queue.mark_done("stg_readings")
    # The chain's next link is ready beside the curves' staging, and goes first.
    assert queue.get(block=False) is nodes["readings"]

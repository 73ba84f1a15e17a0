"""What the UI does, through the webserver's GraphQL API: pause the automation, launch a
partition backfill (the *Materialize → all partitions* dialog), and follow it to its end.

Used by the UI test and ``bench/ui_backfill.py``; the dagster-graphql client carries the calls.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from dagster_graphql import DagsterGraphQLClient

ROOT = Path(__file__).resolve().parents[1]

_AUTOMATION = """
query { repositoriesOrError { ... on RepositoryConnection { nodes {
  sensors { id sensorState { status } }
  schedules { id scheduleState { status } } } } } }"""

_STOP_SENSOR = "mutation($id: String) { stopSensor(id: $id) { __typename } }"
_STOP_SCHEDULE = "mutation($id: String) { stopRunningSchedule(id: $id) { __typename } }"

_ASSETS = "query { assetNodes { assetKey { path } } }"

_LAUNCH = """
mutation($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) {
  __typename
  ... on LaunchBackfillSuccess { backfillId }
  ... on PythonError { message }
  ... on InvalidSubsetError { message }
  ... on UnauthorizedError { message } } }"""

_STATUS = """
query($id: String!) { partitionBackfillOrError(backfillId: $id) {
  __typename ... on PartitionBackfill { status } ... on PythonError { message } } }"""

_RUNS = """
query($id: String!) { runsOrError(filter: {tags: [{key: "dagster/backfill", value: $id}]}) {
  ... on Runs { results { runId status startTime endTime tags { key value } } } } }"""

# A backfill still moving; every other status is final.
_MOVING = {"REQUESTED", "CANCELING", "FAILING"}


class GraphQLError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def dagster_dev(
    env: Mapping[str, str], log: Path, port: int | None = None, timeout: float = 180
) -> Iterator[tuple[DagsterGraphQLClient, int]]:
    """`dagster dev` (webserver and daemon) on a local port with ``env``; its client and port
    once it answers. Stopped, with everything it started, on exit."""
    port = port or free_port()
    dagster = Path(sys.executable).parent / "dagster"
    command = [str(dagster), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)]
    with log.open("w") as out:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            client = DagsterGraphQLClient("127.0.0.1", port_number=port, timeout=30)
            deadline = time.monotonic() + timeout
            while True:
                try:
                    client._execute("{ version }")
                    break
                except Exception:
                    if process.poll() is not None:
                        raise GraphQLError(
                            f"dagster dev exited: {log.read_text()[-2000:]}"
                        ) from None
                    if time.monotonic() > deadline:
                        raise GraphQLError(
                            f"the webserver did not answer within {timeout} s"
                        ) from None
                    time.sleep(2)
            yield client, port
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def stop_automation(client: DagsterGraphQLClient) -> int:
    """Stop every running sensor and schedule (as the UI's toggles do); how many were stopped."""
    stopped = 0
    for repo in client._execute(_AUTOMATION)["repositoriesOrError"]["nodes"]:
        for sensor in repo["sensors"]:
            if sensor["sensorState"]["status"] == "RUNNING":
                client._execute(_STOP_SENSOR, {"id": sensor["id"]})
                stopped += 1
        for schedule in repo["schedules"]:
            if schedule["scheduleState"]["status"] == "RUNNING":
                client._execute(_STOP_SCHEDULE, {"id": schedule["id"]})
                stopped += 1
    return stopped


def all_assets(client: DagsterGraphQLClient) -> list[list[str]]:
    """Every asset's key path: what *Materialize all* selects. With their months, the UI sends
    them as partition names, as ``launch_backfill`` does."""
    nodes = client._execute(_ASSETS)["assetNodes"]
    return [n["assetKey"]["path"] for n in nodes]


def launch_backfill(
    client: DagsterGraphQLClient, assets: Sequence[Sequence[str]], partitions: Sequence[str]
) -> str:
    """A backfill of ``assets`` over ``partitions``; its id."""
    params = {"assetSelection": [{"path": list(a)} for a in assets], "partitionNames": partitions}
    result = client._execute(_LAUNCH, {"params": params})["launchPartitionBackfill"]
    if result["__typename"] != "LaunchBackfillSuccess":
        raise GraphQLError(f"{result['__typename']}: {result.get('message')}")
    return result["backfillId"]


def wait_for_backfill(client: DagsterGraphQLClient, backfill_id: str, timeout: float) -> str:
    """The backfill's final status (COMPLETED_SUCCESS, COMPLETED_FAILED, …), or TIMEOUT."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = client._execute(_STATUS, {"id": backfill_id})["partitionBackfillOrError"]
        if answer["__typename"] != "PartitionBackfill":
            raise GraphQLError(f"backfill {backfill_id}: {answer.get('message')}")
        if answer["status"] not in _MOVING:
            return answer["status"]
        time.sleep(2)
    return "TIMEOUT"


def backfill_runs(client: DagsterGraphQLClient, backfill_id: str) -> list[dict]:
    """The backfill's runs, oldest first: id, status, seconds, and the partition (range) each
    covered."""
    results = client._execute(_RUNS, {"id": backfill_id})["runsOrError"]["results"]
    runs = []
    for r in sorted(results, key=lambda r: r["startTime"] or 0):
        tags = {t["key"]: t["value"] for t in r["tags"]}
        start = tags.get("dagster/asset_partition_range_start", tags.get("dagster/partition"))
        end = tags.get("dagster/asset_partition_range_end", start)
        seconds = (r["endTime"] or 0) - (r["startTime"] or 0)
        runs.append(
            {
                "run_id": r["runId"],
                "status": r["status"],
                "seconds": seconds,
                "months": (start, end),
            }
        )
    return runs

"""The UI path for real: `dagster dev` (webserver and daemon) on a free local port with the
repository's instance settings, a materialisation launched through the GraphQL API and waited
for, and the asset graph page rendered in headless Chromium."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
from dagster_graphql import DagsterGraphQLClient

from orchestration.partitions import MONTHS
from tests.conftest import CHROMIUM_FLAGS, PII_KEY

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    root = tmp_path_factory.mktemp("ui")
    home = root / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    (root / "landing").mkdir()  # empty: the landing sensor finds nothing to do
    port = _free_port()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "LANDING_DIR": str(root / "landing"),
        "WAREHOUSE_PATH": str(root / "warehouse.duckdb"),
        "PII_VAULT_PATH": str(root / "vault.duckdb"),
        "PUBLISH_DIR": str(root / "publish"),
        "MODEL_DIR": str(root / "models"),
        "PII_KEY": PII_KEY,
    }
    dagster = Path(sys.executable).parent / "dagster"
    log = (root / "dagster.log").open("w")
    process = subprocess.Popen(
        [str(dagster), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    client = DagsterGraphQLClient("127.0.0.1", port_number=port, timeout=30)
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            client._execute("{ version }")
            break
        except Exception:
            if process.poll() is not None:
                pytest.fail(f"dagster dev exited: {(root / 'dagster.log').read_text()[-2000:]}")
            time.sleep(2)
    else:
        pytest.fail("the webserver did not answer within 3 minutes")
    try:
        yield {"client": client, "port": port, "home": home, "root": root}
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()


def test_a_materialisation_launched_through_graphql_succeeds(ui):
    client = ui["client"]
    with dg.DagsterInstance.from_config(str(ui["home"])) as instance:
        instance.add_dynamic_partitions(MONTHS.name, ["2025-10"])
    run_id = client.submit_job_execution(
        "__ASSET_JOB",
        asset_selection=[["raw", "ext__economy_monthly"]],
        tags={"dagster/partition": "2025-10"},
    )
    deadline = time.time() + 240
    status = None
    while time.time() < deadline:
        status = client.get_run_status(run_id)
        if status in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE):
            break
        time.sleep(2)
    assert status == dg.DagsterRunStatus.SUCCESS, (ui["root"] / "dagster.log").read_text()[-3000:]
    assert (ui["root"] / "warehouse.duckdb").exists()


def test_the_asset_graph_page_shows_the_assets(ui, chromium, tmp_path):
    from PIL import Image

    # The publish group's lineage: its assets and the ones they come from.
    url = f"http://127.0.0.1:{ui['port']}/locations/orchestration.definitions/asset-groups/publish"
    flags = [
        *CHROMIUM_FLAGS,
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1600,1000",
        "--virtual-time-budget=20000",
    ]
    dom = subprocess.run(
        [chromium, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=180
    ).stdout
    for name in ("campaign_targets", "customer_tags", "kpi_monthly", "customer_segments"):
        assert name in dom, name
    shot = tmp_path / "asset-graph.png"
    subprocess.run(
        [chromium, *flags, f"--screenshot={shot}", url], capture_output=True, timeout=180
    )
    image = Image.open(shot).convert("L")
    histogram = image.histogram()
    assert histogram[255] / sum(histogram) < 0.97, "the asset graph page is blank"
    shutil.copy(shot, ui["root"] / "asset-graph.png")

"""The UI path for real: `dagster dev` (webserver and daemon) on a free local port with the
repository's instance settings, a backfill launched through the GraphQL API as the UI launches it
and waited for, and the asset graph page rendered in headless Chromium. The whole of a drop
backfilled this way (every asset, every month) takes minutes: `bench/ui_backfill.py`."""

import shutil
import subprocess
from pathlib import Path

import dagster as dg
import pytest

from orchestration.graphql import backfill_runs, dagster_dev, launch_backfill, wait_for_backfill
from orchestration.partitions import MONTHS
from orchestration.settings import instance_env, make_instance_home
from tests.conftest import CHROMIUM_FLAGS, PII_KEY

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    root = tmp_path_factory.mktemp("ui")
    env = instance_env(root, PII_KEY)
    home = make_instance_home(Path(env["DAGSTER_HOME"]))
    Path(env["LANDING_DIR"]).mkdir()  # empty: the landing sensor finds nothing to do
    with dagster_dev(env, root / "dagster.log") as (client, port):
        with dg.DagsterInstance.from_config(str(home)) as instance:
            instance.add_dynamic_partitions(MONTHS.name, ["2025-09", "2025-10"])
        yield {"client": client, "port": port, "home": home, "root": root}


def test_a_backfill_launched_through_graphql_succeeds_in_one_run(ui):
    # The *Materialize → all partitions* dialog's mutation, sent with the dagster-graphql client;
    # ingestion takes every month in one run (its backfill policy), where a run per month would
    # reload the warehouse again and again.
    client = ui["client"]
    backfill = launch_backfill(client, [["raw", "ext__weather_daily"]], ["2025-09", "2025-10"])
    status = wait_for_backfill(client, backfill, timeout=240)
    assert status == "COMPLETED_SUCCESS", (ui["root"] / "dagster.log").read_text()[-3000:]
    runs = backfill_runs(client, backfill)
    assert [(r["status"], r["months"]) for r in runs] == [("SUCCESS", ("2025-09", "2025-10"))]
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

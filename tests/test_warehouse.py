"""The pipeline end to end: a simulated drop ingested, built by dbt, modelled and published
through Dagster, its cleaned figures, segments and scores checked against what the simulator's
truth implies, its published tables, files and report against independent recounts.

One Dagster run (ingestion, dbt, the models, publishing, the snapshot) serves the whole module;
`make test` distributes tests by file (`--dist loadfile`), so only one process pays for it. The
incremental models are tested in `test_incremental`, on a warehouse of their own, in another.
"""

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest
import yaml

from ml.config import load_config
from ml.pipeline import score_risk
from ml.registry import load_artifact
from ml.truth import risk_against_truth, segment_agreement
from orchestration import dbt_cli
from orchestration.assets.publishing import TAG_HISTORY, TAGS
from orchestration.assets.warehouse import (
    DBT_PROJECT_DIR,
    dbt_command,
    dbt_resource,
    dbt_target_path,
)
from orchestration.ingest.pii import attach_vault
from orchestration.publish.frames import customer_months
from orchestration.publish.rules import default_rules, tag_fields
from orchestration.publish.tags import evaluate_tags, tag_history
from orchestration.resources import FinegridResource
from orchestration.runner import check_evaluations
from tests.conftest import CHROMIUM_FLAGS, PII_KEY
from tests.outputs import text_columns_matching
from tests.pipeline import Built, build_pipeline

pytestmark = pytest.mark.slow
README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, dbt_manifest: Path) -> Iterator[Built]:
    # The models and publishing for the last two months, so month-to-month changes exist.
    with build_pipeline(tmp_path_factory.mktemp("warehouse"), dbt_manifest, 2) as pipeline:
        yield pipeline


def test_the_pipeline_builds_and_every_dbt_test_is_a_passing_check(built):
    assert built.outcome.success
    assert len(built.outcome.results) == 3  # the build, then two months of models + publishing
    # The run ends with a checkpoint: the warehouse file alone holds it (the tests copy it).
    wal = Path(f"{built.warehouse}.wal")
    assert not wal.exists() or wal.stat().st_size == 0
    evaluations = built.evaluations
    expected = built.defs.resolve_asset_graph().asset_check_keys
    assert {(e.asset_key, e.check_name) for e in evaluations} == {
        (k.asset_key, k.name) for k in expected
    }
    failed = [
        f"{e.asset_key.to_user_string()}:{e.check_name}"
        for e in evaluations
        if not e.passed and e.severity == dg.AssetCheckSeverity.ERROR
    ]
    assert not failed
    # A historical drop is late by today's calendar: the freshness checks say so, as warnings.
    late = {e.check_name for e in evaluations if not e.passed}
    assert late <= {"month_file_on_time"}
    names = {e.check_name for e in evaluations}
    assert "assert_billed_matches_metered" in names
    assert len([e for e in evaluations if e.asset_key.path[0] != "raw"]) > 100


def test_the_bench_times_each_part_of_a_run(built):
    from bench.stage import PARTS, part_of, run_parts, step_parts

    parts = step_parts(built.defs)
    assert parts["raw__ami__daily_reading"] == parts["ops__load_ledger"] == "ingest"
    assert parts["raw__ami__daily_reading_month_file_on_time"] == "ingest"  # a check's step
    assert parts["warehouse"] == "warehouse"  # every model and test, in one dbt build
    assert parts["ml__risk_scores"] == parts["customer_segments"] == "ml"
    assert parts["publish_marts"] == parts["publish__analytics_snapshot"] == "publish"
    with pytest.raises(ValueError, match="'reports'"):
        part_of("reports")

    run_ids = [result.run_id for result in built.outcome.results]
    seconds = run_parts(built.instance, run_ids, parts)
    assert list(seconds) == list(PARTS)
    assert all(s > 0 for s in seconds.values()), seconds
    # One step at a time: the parts add up to less than the runs took, and to most of it.
    records = [built.instance.get_run_record_by_id(run_id) for run_id in run_ids]
    runs = sum(r.end_time - r.start_time for r in records)
    # Each part is rounded to a tenth of a second, so their sum may pass the runs' by that much.
    rounding = 0.05 * len(PARTS)
    assert 0.5 * runs < sum(seconds.values()) <= runs + rounding


def test_lineage_runs_from_the_landing_zone_to_the_features(built):
    graph = built.defs.resolve_asset_graph()
    features = dg.AssetKey(["marts", "customer_features"])
    upstream = (
        graph.get(features).ancestor_keys if hasattr(graph.get(features), "ancestor_keys") else None
    )
    if upstream is None:  # walk parents
        upstream, todo = set(), [features]
        while todo:
            for parent in graph.get(todo.pop()).parent_keys:
                if parent not in upstream:
                    upstream.add(parent)
                    todo.append(parent)
    for key in (
        ["raw", "ami__daily_reading"],
        ["staging", "stg_ami__daily_readings"],
        ["intermediate", "int_daily_energy"],
        ["marts", "fct_daily_energy"],
    ):
        assert dg.AssetKey(key) in upstream
    groups = {graph.get(k).group_name for k in graph.get_all_asset_keys()}
    assert {"staging", "intermediate", "marts"} <= groups


def test_schemas_are_named_exactly(built):
    schemas = set(
        built.sql("SELECT DISTINCT schema_name FROM information_schema.schemata")["schema_name"]
    )
    assert {"raw", "ops", "staging", "intermediate", "marts"} <= schemas
    assert not [s for s in schemas if s.endswith(("_staging", "_marts", "_intermediate"))]


def _monthly(built: Built) -> pl.DataFrame:
    """Metered energy per customer-month with whether the month was measured in full."""
    return built.sql(
        """SELECT customer_id, energy_month, sum(kwh) AS kwh, count(kwh) AS days,
                  bool_or((is_estimated AND NOT is_spike_adjusted) OR has_negative_step)
                      AS uncertain,
                  bool_or(is_estimated AND NOT is_spike_adjusted) AS gap,
                  bool_or(is_estimated AND (day(energy_date) = 1
                                            OR energy_date = last_day(energy_date))) AS edge_gap,
                  bool_or(has_meter_change) AS meter_change, bool_or(has_rollover) AS rollover,
                  bool_or(is_spike_adjusted) AS spike
           FROM marts.fct_daily_energy WHERE is_known_customer GROUP BY ALL"""
    ).join(
        built.truth_energy().rename({"cons_no": "customer_id", "kwh": "truth_kwh"}),
        on=["customer_id", "energy_month"],
    )


def _full_months(monthly: pl.DataFrame) -> pl.DataFrame:
    return monthly.filter(
        ~pl.col("uncertain") & (pl.col("days") == pl.col("energy_month").dt.month_end().dt.day())
    )


def test_energy_continues_through_meter_changes_as_simulated(built):
    changed = _full_months(_monthly(built)).filter(pl.col("meter_change"))
    assert len(changed) >= 3
    diff = (changed["kwh"] - changed["truth_kwh"]).abs()
    assert diff.max() < 0.01, changed.filter(diff >= 0.01)


def test_energy_through_rollovers_and_spikes_is_what_was_consumed(built):
    # A gap at a month's edge (a spike next to a missing last day) moves energy across it.
    full = _full_months(_monthly(built)).filter(~pl.col("edge_gap"))
    for flag in ("rollover", "spike"):
        months = full.filter(pl.col(flag))
        assert len(months) >= 1, flag
        assert (months["kwh"] - months["truth_kwh"]).abs().max() < 0.01, flag
    # And every month measured in full, whatever happened in it.
    diff = (full["kwh"] - full["truth_kwh"]).abs()
    assert len(full) > 500 and diff.max() < 0.01


def test_gaps_keep_their_energy_and_no_day_is_negative(built):
    days = built.sql(
        "SELECT count(*) FILTER (WHERE kwh < 0) AS negative, "
        "count(*) FILTER (WHERE is_estimated) AS estimated FROM marts.fct_daily_energy"
    ).row(0, named=True)
    assert days["negative"] == 0 and days["estimated"] > 0
    # A gap inside a month moves energy between its days, never out of the month.
    monthly = _monthly(built)
    inside = monthly.filter(
        pl.col("gap")
        & ~pl.col("edge_gap")
        & (pl.col("days") == pl.col("energy_month").dt.month_end().dt.day())
    )
    assert len(inside) >= 5
    assert (inside["kwh"] - inside["truth_kwh"]).abs().max() < 0.01


def test_reversals_cancel_their_originals(built):
    pay = built.sql("SELECT * FROM marts.fct_payments")
    reversals = pay.filter(pl.col("is_reversal"))
    assert len(reversals) >= 3
    originals = pay.filter(pl.col("payment_id").is_in(reversals["reversed_payment_id"].implode()))
    matched = reversals.filter(~pl.col("is_unmatched_reversal"))
    assert originals["is_cancelled"].all() and len(originals) == len(matched)
    # A reversal whose original no loaded file holds is flagged, not matched to another.
    unmatched = reversals.filter(pl.col("is_unmatched_reversal"))
    assert not set(unmatched["reversed_payment_id"]) & set(pay["payment_id"])
    assert (originals["net_amount_yuan"] == 0).all() and (reversals["net_amount_yuan"] == 0).all()
    assert pay["payment_id"].n_unique() == len(pay)


def test_correction_bills_replace_what_they_correct(built):
    corrected = built.sql(
        """SELECT b.customer_id, b.bill_month, b.amount_yuan, r.T_AMT
           FROM marts.fct_monthly_bills b
           JOIN raw.mkt__monthly_bill r
             ON r.CONS_NO = b.customer_id AND r.BILL_YM = strftime(b.bill_month, '%Y%m')
            AND r.BILL_FLAG = 'C'
           WHERE b.is_corrected"""
    )
    assert len(corrected) >= 3
    assert (corrected["amount_yuan"] == corrected["T_AMT"]).all()
    dupes = built.sql(
        "SELECT customer_id, bill_month FROM marts.fct_monthly_bills "
        "GROUP BY ALL HAVING count(*) > 1"
    )
    assert dupes.is_empty()


def test_identities_are_normalised_and_orphans_never_joined(built):
    truth = set(pl.read_parquet(built.drop.truth / "accounts.parquet")["cons_no"])
    orders = built.sql(
        "SELECT cons_no_form, customer_id, is_known_customer FROM marts.fct_work_orders"
    )
    typed = orders.filter(pl.col("cons_no_form").is_in(["hb_prefix", "spaces"]))
    assert len(typed) > 0 and typed["is_known_customer"].all()
    # Every known customer is a simulated account; every unknown one is not.
    for table in ("fct_work_orders", "fct_payments", "fct_daily_energy"):
        rows = built.sql(f"SELECT DISTINCT customer_id, is_known_customer FROM marts.{table}")
        known = rows.filter(pl.col("is_known_customer"))["customer_id"]
        unknown = rows.filter(~pl.col("is_known_customer"))["customer_id"].drop_nulls()
        assert set(known) <= truth, table
        assert not set(unknown) & truth, table
    orphans = built.sql("SELECT source, count(*) AS n FROM marts.fct_orphan_records GROUP BY 1")
    assert {"fin.payment", "ami.daily_reading"} <= set(orphans["source"])


def test_orphan_records_count_every_record_of_an_account_no_archive_knows(built):
    # Counted from the facts (and the readings), each record must be counted once, as the
    # staging views hold it.
    staged = {
        "ami.load_curve": "stg_ami__load_curves",
        "mkt.monthly_bill": "stg_mkt__bills",
        "fin.payment": "stg_fin__payments",
        "fin.arrears": "stg_fin__arrears",
        "crm.work_order": "stg_crm__work_orders",
    }
    for source, view in staged.items():
        expected = built.sql(
            f"SELECT count(*) AS n FROM staging.{view} WHERE customer_id IS NULL "
            "OR customer_id NOT IN (SELECT customer_id FROM marts.dim_customer)"
        )["n"][0]
        counted = built.sql(
            "SELECT coalesce(sum(records), 0) AS n FROM marts.fct_orphan_records WHERE source = ?",
            [source],
        )["n"][0]
        assert counted == expected, source
        if source in ("fin.payment", "crm.work_order"):
            assert expected > 0, source  # the simulated drop has orphans there


def test_work_order_times_are_consistent_across_offsets(built):
    """The simulator accepts orders between 07:00 and 22:00 Shanghai time, whatever offset
    the file used; `Z` read as local time would put a third of them before 07:00."""
    orders = built.sql(
        "SELECT hour(accepted_at) AS h, has_time_disorder, completion_minutes "
        "FROM marts.fct_work_orders"
    )
    assert orders["h"].min() >= 7 and orders["h"].max() <= 22
    disordered = orders.filter(pl.col("has_time_disorder"))
    assert len(disordered) > 0 and disordered["completion_minutes"].is_null().all()
    assert (orders["completion_minutes"].drop_nulls() >= 0).all()


def test_customer_features_one_row_per_customer_and_month(built):
    features = built.sql("SELECT * FROM marts.customer_features")
    assert features.select(["customer_id", "as_of_month"]).is_unique().all()
    archive = built.sql("SELECT DISTINCT customer_id FROM marts.dim_customer")["customer_id"]
    assert set(features["customer_id"]) == set(archive)
    last = features.filter(pl.col("as_of_month") == features["as_of_month"].max())
    truth = built.truth_energy().filter(pl.col("energy_month") == last["as_of_month"][0])
    joined = last.join(truth, left_on="customer_id", right_on="cons_no")
    close = ((joined["kwh_month"] - joined["kwh"]).abs() < 0.01).mean()
    assert close > 0.95
    for dim in (
        "kwh_12m",
        "valley_share_12m",
        "online_pay_share_12m",
        "late_bills_12m",
        "work_orders_12m",
        "cooling_slope_kwh_per_c",
    ):
        assert features[dim].drop_nulls().len() > 0, dim


def test_no_personal_data_reaches_the_models_or_the_analyst_snapshot(built):
    con = duckdb.connect()
    attach_vault(con, built.vault, PII_KEY)
    secrets = {
        v
        for (v,) in con.execute(
            "SELECT value FROM vault.customer_pii WHERE length(value) >= 6"
        ).fetchall()
    }
    con.close()
    assert len(secrets) > 100
    pattern = "|".join(re.escape(s) for s in sorted(secrets))
    snapshot = Path(built.resource.publish_dir) / "analytics.duckdb"
    assert text_columns_matching([built.warehouse, snapshot], pattern) == []


def test_the_readme_query_answers_last_summer_by_district(built):
    sql = re.search(r"```sql\n(-- Last summer.*?)```", README.read_text("utf-8"), re.S).group(1)
    answer = built.sql(sql)
    assert len(answer) >= 5
    truth = (
        built.truth_energy()
        .join(
            pl.read_parquet(built.drop.truth / "accounts.parquet"),
            on="cons_no",
        )
        .filter(
            (pl.col("elec_type_code") == "100")
            & pl.col("month").is_in([202506, 202507, 202508, 202509])
        )
        .group_by("district_code")
        .agg(pl.col("kwh").sum())
    )
    assert len(truth) == len(answer)
    # Within 1 %: reading gaps at the season's edges spread a little energy across them.
    assert abs(answer["kwh"].sum() / truth["kwh"].sum() - 1) < 0.01


def _dbt(
    built: Built, *args: str, target_name: str = "dbt_target"
) -> tuple[subprocess.CompletedProcess, Path]:
    """dbt in its own process: in-process, dbt-duckdb keeps the warehouse open read-write and
    every later read-only connection of this process would be refused."""
    target = built.warehouse.parent / target_name
    command = dbt_command(built.warehouse, target, *args)
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    return result, target


def test_the_dbt_unit_tests_run_here_and_not_in_the_pipelines_builds(built):
    # A target of their own: dbt writes each unit test's fixture SQL under its input's name,
    # two unit tests of one input at once into one file, which the docs' compiled SQL (read
    # by test_no_model_or_test_plans_a_nested_loop_join) must not hold.
    result, target = _dbt(built, "test", "--select", "test_type:unit", target_name="unit_target")
    assert result.returncode == 0, result.stdout[-2000:]
    ran = json.loads((target / "run_results.json").read_text("utf-8"))["results"]
    unit_tests = json.loads((target / "manifest.json").read_text("utf-8"))["unit_tests"]
    assert unit_tests and {r["unique_id"] for r in ran} == set(unit_tests)
    assert {r["status"] for r in ran} == {"pass"}
    # The pipeline's builds (dbt's log of them, JSON lines) ran the models but no unit test.
    logs = sorted(dbt_target_path(built.warehouse).glob("dbt.log*"))
    log = "".join(path.read_text("utf-8") for path in logs)
    assert '"unique_id": "model.finegrid.int_meter_readings"' in log
    assert '"unique_id": "unit_test.' not in log


def test_the_pipelines_dbt_orders_its_nodes_by_the_times_it_keeps(built):
    # Both of a run's dbt invocations (the warehouse, the publish marts) went through
    # finegrid-dbt, which kept each node's seconds beside the manifest for the next build.
    assert Path(dbt_resource().dbt_executable).name == "finegrid-dbt"
    target = dbt_target_path(built.warehouse)
    history = dbt_cli.read_history(target)
    # Beside the warehouse, so it goes with it rather than piling up in the project's target/.
    assert target == built.warehouse.parent / f"{built.warehouse.name}.dbt"
    assert (target / "partial_parse.msgpack").is_file()
    for model in ("int_meter_readings", "customer_features", "kpi_monthly"):
        assert history[f"model.finegrid.{model}"] > 0
    assert any(node.startswith("test.finegrid.") for node in history)


@pytest.fixture(scope="module")
def docs_target(built: Built) -> Path:
    """`dbt docs generate` once: its catalog, and every model and test compiled."""
    result, target = _dbt(built, "docs", "generate")
    assert result.returncode == 0, result.stdout[-2000:]
    return target


def test_docs_generate_and_every_mart_column_is_described(docs_target):
    target = docs_target
    catalog = json.loads((target / "catalog.json").read_text("utf-8"))
    manifest = json.loads((target / "manifest.json").read_text("utf-8"))
    marts = [
        n
        for n in manifest["nodes"].values()
        if n["resource_type"] == "model" and n["schema"] == "marts"
    ]
    assert len(marts) >= 12
    for node in marts:
        built_columns = {c.lower() for c in catalog["nodes"][node["unique_id"]]["columns"]}
        documented = {c: v for c, v in node["columns"].items() if v.get("description")}
        assert built_columns == set(documented), node["name"]
        assert all(v["meta"].get("zh") for v in node["columns"].values()), node["name"]


# The join operators whose cost grows with the product of their inputs. A join condition that
# mixes an equality with anything DuckDB cannot hash (`a = b and not c` in a LEFT JOIN) falls
# back to one of these: invisible on a test drop, an hour at a city's size.
QUADRATIC_JOINS = re.compile(r"\b(BLOCKWISE_NL_JOIN|NESTED_LOOP_JOIN)\b")


def test_no_model_or_test_plans_a_nested_loop_join(built, docs_target):
    compiled = sorted((docs_target / "compiled").rglob("*.sql"))
    assert len(compiled) > 100
    quadratic = {}
    with duckdb.connect(str(built.warehouse), read_only=True) as con:
        for path in compiled:
            plan = "\n".join(
                row[1] for row in con.execute("EXPLAIN " + path.read_text("utf-8")).fetchall()
            )
            if found := set(QUADRATIC_JOINS.findall(plan)):
                quadratic[path.name] = found
    assert not quadratic


def test_source_freshness_is_checked_on_load_time(built):
    result, target = _dbt(built, "source", "freshness")
    assert result.returncode == 0, result.stdout[-2000:]
    sources = json.loads((target / "sources.json").read_text("utf-8"))["results"]
    assert len(sources) == 11 and {r["status"] for r in sources} == {"pass"}


def test_feature_docs_carry_chinese_names_units_and_dimensions():
    doc = yaml.safe_load(
        (DBT_PROJECT_DIR / "models/marts/features/_features__models.yml").read_text("utf-8")
    )
    columns = doc["models"][0]["columns"]
    dims = {c["meta"]["dimension"] for c in columns}
    assert {"usage", "behaviour", "demand", "credit"} <= dims
    assert all(c["description"] and c["meta"]["zh"] for c in columns)


def test_an_error_severity_failure_blocks_what_is_downstream(built, tmp_path):
    warehouse = tmp_path / "blocked.duckdb"
    shutil.copy(built.warehouse, warehouse)
    with duckdb.connect(str(warehouse)) as con:
        # A payment mode no code table knows, slipped into raw past ingestion's checks.
        con.execute(
            """INSERT INTO raw.fin__payment (PAY_SN, CONS_NO, PAY_TIME, PAY_AMT, PAY_MODE,
                   REV_FLAG, _source_file, _row_number, _period, _loaded_at)
               VALUES ('PSBLOCK', '1', '2025/10/01 10:00:00', 100, '99', '0',
                       'fin/payment/payment_x.csv', 1, '202510', now())"""
        )
        con.execute("DELETE FROM marts.customer_features")  # a rebuild would refill it
    downstream = [
        dg.AssetKey(["marts", "fct_payments"]),
        dg.AssetKey(["intermediate", "int_customer_month_activity"]),
        dg.AssetKey(["marts", "customer_features"]),
    ]
    # The payments' staging is a table: it must be built again to see the raw row.
    staged = dg.AssetKey(["staging", "stg_fin__payments"])
    result = dg.materialize(
        [*built.defs.assets, *built.defs.asset_checks],
        selection=[staged, *downstream],
        resources={
            "finegrid": FinegridResource(warehouse_path=str(warehouse)),
            "dbt": dbt_resource(),
        },
        instance=built.instance,
        raise_on_error=False,
    )
    assert not result.success
    failed = [e for e in check_evaluations(result) if not e.passed]
    assert [e.asset_key for e in failed] == [downstream[0]]
    assert "pay_mode" in failed[0].check_name
    materialised = {
        e.asset_key for e in result.all_events if e.event_type_value == "ASSET_MATERIALIZATION"
    }
    assert downstream[0] in materialised and downstream[2] not in materialised
    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM marts.customer_features").fetchone()[0] == 0


def test_every_open_customer_gets_one_segment_and_one_score(built):
    scored = sorted(
        built.sql("SELECT DISTINCT as_of_month FROM ml.customer_segments")["as_of_month"]
    )
    assert [f"{m:%Y-%m}" for m in scored] == built.outcome.months[-2:]
    for month in scored:
        open_customers = set(
            built.sql(
                "SELECT customer_id FROM marts.customer_features "
                "WHERE as_of_month = ? AND status_code <> '9'",
                [month],
            )["customer_id"]
        )
        segments = built.sql("SELECT * FROM ml.customer_segments WHERE as_of_month = ?", [month])
        scores = built.sql("SELECT * FROM ml.risk_scores WHERE as_of_month = ?", [month])
        for table in (segments, scores):
            assert set(table["customer_id"]) == open_customers
            assert table["customer_id"].n_unique() == len(table)
        assert set(segments["segment_code"]) <= set(load_config("segment_mapping")["segments"])
        assert segments["reason"].str.len_chars().min() > 5
        assert ((segments["confidence"] >= 0) & (segments["confidence"] <= 1)).all()
        assert set(scores["risk_grade"]) <= set("ABCDE")
        profiles = built.sql("SELECT * FROM ml.segment_profiles WHERE as_of_month = ?", [month])
        assert profiles["size"].sum() == len(segments)
        assert set(profiles["cluster_id"]) == set(segments["cluster_id"])


def test_model_runs_are_recorded_and_their_artifacts_verified(built):
    runs = built.sql("SELECT * FROM ml.model_runs ORDER BY model_name, as_of_month")
    assert runs["model_name"].to_list() == ["risk_gbm_calibrated"] * 2 + ["segmentation_kmeans"] * 2
    risk = runs.row(1, named=True)
    assert "holdout" in risk["data_window"] and risk["features"]
    assert json.loads(risk["metrics"])["gbm"]["auc"] > 0.5
    root = Path(built.resource.model_dir)
    for row in runs.iter_rows(named=True):
        assert load_artifact(Path(row["artifact_path"]), row["artifact_sha256"], root) is not None
    rules = Path(built.resource.publish_dir).glob("segment_rules_*.txt")
    text = next(rules).read_text("utf-8")
    assert "客户分群规则" in text and "THEN basic_need" in text


def _model_runs(warehouse: Path, model: str = "risk_gbm_calibrated") -> pl.DataFrame:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.execute(
            "SELECT * FROM ml.model_runs WHERE model_name = ? ORDER BY created_at", [model]
        ).pl()


def _july_run(runs: pl.DataFrame) -> dict:
    """The fixture's models ran for 2025-09 and 2025-10. Every three months (the rules files),
    2025-09 is served by a model trained as of 2025-07, in its own run, and 2025-10 by one
    trained as of itself. Returns 2025-09's run."""
    assert [
        (str(r["as_of_month"]), str(r["trained_as_of"])) for r in runs.iter_rows(named=True)
    ] == [
        ("2025-09-01", "2025-07-01"),
        ("2025-10-01", "2025-10-01"),
    ]
    assert (runs["trained_run_id"] == runs["run_id"]).all()
    return runs.row(0, named=True)


def test_months_between_trainings_score_with_the_registered_model(built, tmp_path):
    assert load_config("risk")["retrain_every_months"] == 3
    july = _july_run(_model_runs(built.warehouse))

    # A copy of the warehouse and the registry; 2025-08 is then modelled.
    warehouse, models = tmp_path / "warehouse.duckdb", tmp_path / "models"
    shutil.copy(built.warehouse, warehouse)
    shutil.copytree(built.resource.model_dir, models)
    with duckdb.connect(str(warehouse)) as con:
        con.execute(
            "UPDATE ml.model_runs SET artifact_path = replace(artifact_path, ?, ?)",
            [str(built.resource.model_dir), str(models)],
        )
    artifact = Path(july["artifact_path"].replace(str(built.resource.model_dir), str(models)))
    resource = FinegridResource(
        warehouse_path=str(warehouse),
        publish_dir=str(tmp_path / "publish"),
        model_dir=str(models),
    )

    def model_august() -> dg.ExecuteInProcessResult:
        return dg.materialize(
            [*built.defs.assets, *built.defs.asset_checks],
            selection=[dg.AssetKey(["ml", "risk_scores"])],
            resources={"finegrid": resource, "dbt": dbt_resource()},
            instance=built.instance,
            partition_key="2025-08",
            raise_on_error=False,
        )

    def august() -> pl.DataFrame:
        with duckdb.connect(str(warehouse), read_only=True) as con:
            return con.execute(
                "SELECT * FROM ml.risk_scores WHERE as_of_month = '2025-08-01' ORDER BY customer_id"
            ).pl()

    # From the registry: no training, no new artifact, the July model's scores, and its gate.
    reusing = model_august()
    assert reusing.success
    gate = next(e for e in check_evaluations(reusing) if e.check_name == "risk_auc_above_floor")
    assert gate.metadata["value"].value == json.loads(july["metrics"])["gbm"]["auc"]
    reused = _model_runs(warehouse).row(-1, named=True)
    assert str(reused["as_of_month"]) == "2025-08-01"
    assert reused["trained_run_id"] == july["run_id"] != reused["run_id"]
    assert str(reused["trained_as_of"]) == "2025-07-01"
    assert reused["artifact_sha256"] == july["artifact_sha256"]
    assert "with the model of run " + july["run_id"] in reused["data_window"]
    assert not (models / reused["run_id"]).exists()
    model = load_artifact(artifact, july["artifact_sha256"], models)
    keys = "customer_id, as_of_month, status_code, arrears_max_days_overdue"
    with duckdb.connect(str(warehouse), read_only=True) as con:
        features = con.execute(
            f"SELECT {keys}, {', '.join(model.features)} FROM marts.customer_features "
            "WHERE as_of_month = '2025-08-01'"
        ).pl()
    expected = score_risk(model, features, date(2025, 8, 1), load_config("risk"))
    scores = august()
    assert len(scores) > 100
    assert scores.equals(expected.sort("customer_id"))

    # A model file changed since its run recorded it is never loaded: the run fails and
    # August keeps its scores.
    artifact.write_bytes(artifact.read_bytes() + b"\0")
    result = model_august()
    assert not result.success
    failure = result.get_step_failure_events()[0].event_specific_data.error
    assert "is not the " + july["artifact_sha256"] in str(failure)
    assert august().equals(scores)

    # A model file that is gone: the month trains again as of July, and registers its model.
    artifact.unlink()
    assert model_august().success
    retrained = _model_runs(warehouse).row(-1, named=True)
    assert retrained["trained_run_id"] == retrained["run_id"]
    assert str(retrained["trained_as_of"]) == "2025-07-01"
    assert (models / retrained["run_id"] / "risk_model.joblib").is_file()

    # One outside today's registry (MODEL_DIR moved) is not loaded: trained again too.
    elsewhere = tmp_path / "elsewhere.joblib"
    shutil.copy(retrained["artifact_path"], elsewhere)
    with duckdb.connect(str(warehouse)) as con:
        con.execute(
            "UPDATE ml.model_runs SET artifact_path = ? WHERE run_id = ?",
            [str(elsewhere), retrained["run_id"]],
        )
    assert model_august().success
    again = _model_runs(warehouse).row(-1, named=True)
    assert again["trained_run_id"] == again["run_id"] != retrained["run_id"]


def test_months_between_trainings_place_customers_in_the_registered_clusters(built, tmp_path):
    # As the risk model: 2025-09's run found the clusters as of 2025-07, 2025-10's its own.
    assert load_config("segmentation")["retrain_every_months"] == 3
    july = _july_run(_model_runs(built.warehouse, "segmentation_kmeans"))
    assert "clusters found as of 2025-07" in july["data_window"]

    # On a copy of the warehouse, with the fixture's registry: this run adds its artifacts
    # beside the fixture's, which no other test lists.
    warehouse = tmp_path / "warehouse.duckdb"
    shutil.copy(built.warehouse, warehouse)
    resource = FinegridResource(
        warehouse_path=str(warehouse),
        publish_dir=str(tmp_path / "publish"),
        model_dir=str(built.resource.model_dir),
    )
    result = dg.materialize(
        [*built.defs.assets, *built.defs.asset_checks],
        selection=[
            dg.AssetKey(["ml", "risk_scores"]),
            dg.AssetKey(["ml", "customer_segments"]),
            dg.AssetKey(["ml", "segment_profiles"]),
        ],
        resources={"finegrid": resource, "dbt": dbt_resource()},
        instance=built.instance,
        partition_key="2025-08",
    )
    assert result.success
    assert all(e.passed for e in check_evaluations(result))
    runs = _model_runs(warehouse, "segmentation_kmeans")
    august = runs.filter(pl.col("as_of_month") == date(2025, 8, 1))
    with duckdb.connect(str(warehouse), read_only=True) as con:
        profiles = con.execute(
            "SELECT * EXCLUDE (size, share, as_of_month) FROM ml.segment_profiles "
            "WHERE as_of_month IN ('2025-08-01', '2025-09-01') ORDER BY cluster_id"
        ).pl()
        segments = con.execute(
            "SELECT count(*) FROM ml.customer_segments WHERE as_of_month = '2025-08-01'"
        ).fetchone()[0]
    assert august["trained_run_id"].to_list() == [july["run_id"]]
    assert str(august["trained_as_of"][0]) == "2025-07-01"
    assert segments > 100
    # August's customers sit in July's clusters: the same centres as September's.
    assert profiles.n_unique() == len(profiles) // 2 > 2


def test_the_quality_gate_passed_as_blocking_checks(built):
    ml_checks = [e for e in built.evaluations if e.asset_key.path[0] == "ml"]
    assert len(ml_checks) == 2 * 4  # two as-of months
    gate = {e.check_name: e for e in ml_checks}
    assert all(e.passed for e in ml_checks)
    assert set(gate) == {
        "risk_auc_above_floor",
        "tree_fidelity",
        "no_empty_or_giant_segment",
        "segment_changes_within_threshold",
    }
    assert all(e.passed for e in gate.values())
    graph = built.defs.resolve_asset_graph()
    blocking = {
        k.name
        for k in graph.asset_check_keys
        if k.asset_key.path[0] == "ml" and graph.get_check_spec(k).blocking
    }
    assert blocking == set(gate)


def test_segments_and_scores_agree_with_the_simulators_truth(built):
    truth = pl.read_parquet(built.drop.truth / "accounts.parquet")
    latest = "SELECT * FROM {} WHERE as_of_month = (SELECT max(as_of_month) FROM {})"
    segments = built.sql(latest.format("ml.customer_segments", "ml.customer_segments"))
    agreement = segment_agreement(segments, truth)
    assert agreement["segment_accuracy"] > 0.85, agreement
    assert agreement["cluster_archetype_ari"] > 0.5, agreement
    risk = risk_against_truth(built.sql(latest.format("ml.risk_scores", "ml.risk_scores")), truth)
    # About 25 defaults: the AUC's standard error is near 0.05, so this drop can show the
    # model ranks risk well above chance; the gap to the truth's own AUC is measured on
    # 20,000 accounts by bench/ml_truth_report.py.
    assert risk["defaults"] >= 10, risk
    assert risk["model_auc"] > 0.7, risk


def test_a_second_segmentation_run_replaces_its_month_with_the_same_result(built, tmp_path):
    warehouse = tmp_path / "again.duckdb"
    shutil.copy(built.warehouse, warehouse)
    resource = FinegridResource(
        warehouse_path=str(warehouse),
        publish_dir=str(tmp_path / "publish"),
        model_dir=str(tmp_path / "models"),
    )
    result = dg.materialize(
        [*built.defs.assets, *built.defs.asset_checks],
        selection=[
            dg.AssetKey(["ml", "customer_segments"]),
            dg.AssetKey(["ml", "segment_profiles"]),
        ],
        resources={"finegrid": resource, "dbt": dbt_resource()},
        instance=built.instance,
        partition_key=built.latest,
    )
    change = next(
        e for e in check_evaluations(result) if e.check_name == "segment_changes_within_threshold"
    )
    first = json.loads(
        built.sql(
            "SELECT metrics FROM ml.model_runs WHERE model_name = 'segmentation_kmeans' "
            "ORDER BY as_of_month DESC LIMIT 1"
        )["metrics"][0]
    )["segment_change_share"]
    # compared with the month before, not with itself: the same share as the first run
    assert change.passed and change.metadata["value"].value == first
    query = "SELECT * FROM ml.customer_segments ORDER BY as_of_month, customer_id"
    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert con.execute(query).pl().equals(built.sql(query))
        assert con.execute("SELECT count(*) FROM ml.model_runs").fetchone()[0] == 5


def test_the_analyst_snapshot_holds_marts_and_ml_read_only_without_personal_data(built):
    snapshot = Path(built.resource.publish_dir) / "analytics.duckdb"
    assert snapshot.exists()
    assert oct(snapshot.stat().st_mode)[-3:] == "444"
    with duckdb.connect(str(snapshot), read_only=True) as con:
        tables = dict(
            ((s, t), con.execute(f'SELECT count(*) FROM "{s}"."{t}"').fetchone()[0])
            for s, t in con.execute(
                "SELECT table_schema, table_name FROM information_schema.tables"
            ).fetchall()
        )
    assert {s for s, _ in tables} == {"marts", "ml", "publish"}
    for (schema, table), rows in tables.items():
        assert built.sql(f'SELECT count(*) AS n FROM "{schema}"."{table}"')["n"][0] == rows
    assert ("marts", "customer_features") in tables and ("ml", "customer_segments") in tables
    # Two tables fingerprinted by what their models declare (dbt meta), the rest by rows.
    from orchestration.publish.snapshot import read_fingerprints

    prints = read_fingerprints(snapshot.resolve())
    hashed = prints["marts.fct_daily_energy"].basis.split(" of (")[0]
    assert hashed == "hash(built_at, is_known_customer)"
    assert prints["marts.fct_daily_load_profile"].basis.startswith("hash(built_at) of (")
    assert {n for n, p in prints.items() if p.basis != "row"} == {
        "marts.fct_daily_energy",
        "marts.fct_daily_load_profile",
    }


def test_a_reader_keeps_a_complete_snapshot_while_it_is_replaced(built, tmp_path):
    """Also with every table that has a date kept as month files (at 100,000 accounts the big
    ones are): each keeps its types in Parquet, and the second copy writes none of them."""
    from orchestration.publish.snapshot import read_fingerprints, write_snapshot

    first = write_snapshot(built.warehouse, tmp_path, file_rows=1)
    reader = duckdb.connect(str(first.path), read_only=True)
    try:
        before = reader.execute("SELECT count(*) FROM marts.customer_features").fetchone()[0]
        second = write_snapshot(built.warehouse, tmp_path, file_rows=1)  # under the reader
        assert (
            reader.execute("SELECT count(*) FROM marts.customer_features").fetchone()[0] == before
        )
        assert second.tables == first.tables
        assert sorted(p.name for p in tmp_path.iterdir()) == [".analytics", "analytics.duckdb"]
    finally:
        reader.close()
    prints = read_fingerprints(second.path.resolve())
    dated = {name for name, p in prints.items() if p.partition and p.rows()}
    # kpi_monthly's sums of integers are HUGEINTs, which Parquet keeps as doubles: a table.
    in_files = {name for name, p in prints.items() if p.in_files}
    assert dated - in_files == {"publish.kpi_monthly"}
    assert {"marts.fct_daily_energy", "marts.customer_features"} <= in_files
    assert not set(second.rewritten) & in_files
    with duckdb.connect(str(second.path), read_only=True) as con:
        con.execute(f"ATTACH '{built.warehouse}' AS w (READ_ONLY)")
        for table in ("marts.customer_features", "marts.fct_daily_load_profile"):
            for a, b in ((table, f"w.{table}"), (f"w.{table}", table)):
                assert (
                    con.execute(f"SELECT * FROM {a} EXCEPT ALL SELECT * FROM {b}").fetchall() == []
                )


def test_the_readme_analyst_queries_run_on_the_snapshot(built):
    text = README.read_text("utf-8")
    section = text[text.index("## The analyst snapshot") : text.index("## Layout")]
    queries = re.findall(r"```sql\n(.*?)```", section, re.S)
    assert len(queries) == 5
    with duckdb.connect(
        str(Path(built.resource.publish_dir) / "analytics.duckdb"), read_only=True
    ) as con:
        for sql in queries:
            assert con.execute(sql).fetchall(), sql.splitlines()[0]


# ── publishing ─────────────────────────────────────────────────────────────────────────


def _campaigns() -> list[dict]:
    from orchestration.publish.rules import default_rules

    return default_rules()["campaigns"]["campaigns"]


def _publish_dir(built) -> Path:
    return Path(built.resource.publish_dir)


def test_publishing_leaves_tags_lists_marts_snapshot_and_report(built):
    for table in (
        "tag_catalogue",
        "customer_tags",
        "customer_tag_history",
        "segment_service_plan",
        "customer_service_plan",
        "campaign_targets",
        "campaign_runs",
        "customer_segment_months",
        "sla_compliance",
        "kpi_monthly",
    ):
        assert built.sql(f"SELECT count(*) AS n FROM publish.{table}")["n"][0] > 0, table
    month = built.sql("SELECT max(as_of_month) AS m FROM ml.customer_segments")["m"][0]
    tags = built.sql(
        "SELECT count(DISTINCT tag_code) AS n FROM publish.customer_tags WHERE as_of_month = ?",
        [month],
    )["n"][0]
    assert tags >= 25
    runs = built.sql(
        "SELECT campaign_code, targets FROM publish.campaign_runs WHERE as_of_month = ?", [month]
    )
    assert len(runs) == 6 and runs["targets"].sum() > 0
    folder = _publish_dir(built) / "campaigns"
    for code in runs["campaign_code"]:
        assert (folder / f"{code}_{month:%Y%m}.csv").exists()
        assert (folder / f"{code}_{month:%Y%m}.parquet").exists()
    assert (_publish_dir(built) / "report.html").exists()


def test_tag_history_accounts_for_every_tagged_month(built):
    counted = built.sql(
        """SELECT customer_id, tag_code, count(*) AS months FROM publish.customer_tags
           GROUP BY ALL ORDER BY ALL"""
    )
    from_history = built.sql(
        """SELECT customer_id, tag_code, sum(months)::BIGINT AS months
           FROM publish.customer_tag_history GROUP BY ALL ORDER BY ALL"""
    )
    assert counted.equals(from_history)
    changes = built.sql(
        "SELECT count(*) AS n FROM publish.customer_tag_history WHERE valid_to IS NOT NULL"
    )["n"][0]
    assert changes > 0  # month-to-month changes are visible
    overlap = built.sql(
        """SELECT count(*) AS n FROM publish.customer_tag_history a
           JOIN publish.customer_tag_history b USING (customer_id, tag_code)
           WHERE a.valid_from < b.valid_from AND coalesce(a.valid_to, DATE '9999-01-01') >
                 b.valid_from"""
    )["n"][0]
    assert overlap == 0


def test_tags_are_evaluated_again_only_for_the_months_whose_rows_changed(built, tmp_path):
    # A run evaluates the tags of the months whose customer-month rows changed since their tags
    # were evaluated (every month under another library); the tables must then equal an
    # evaluation of every month. An old month's complaints are raised, so its tags change.
    warehouse = tmp_path / "tags.duckdb"
    shutil.copy(built.warehouse, warehouse)
    library = default_rules()["tags"]
    latest, months = built.sql(
        "SELECT max(as_of_month) AS m, count(DISTINCT as_of_month) AS n FROM publish.customer_tags"
    ).row(0)
    old = built.sql("SELECT min(as_of_month) + INTERVAL 3 MONTH AS m FROM publish.customer_tags")
    with duckdb.connect(str(warehouse)) as con:
        con.execute(
            "UPDATE marts.customer_features SET complaints_12m = complaints_12m + 2 "
            "WHERE as_of_month = ?",
            [old["m"][0]],
        )

    def evaluated() -> int:
        result = dg.materialize(
            built.defs.assets,
            selection=[TAGS, TAG_HISTORY],
            partition_key=f"{latest:%Y-%m}",
            resources={
                "finegrid": FinegridResource(warehouse_path=str(warehouse)),
                "dbt": dbt_resource(),
            },
            instance=built.instance,
        )
        (tags,) = [
            e.materialization.metadata
            for e in result.get_asset_materialization_events()
            if e.asset_key == TAGS
        ]
        return tags["months_evaluated"].value

    def assert_whole() -> None:
        with duckdb.connect(str(warehouse), read_only=True) as con:
            expected = evaluate_tags(
                customer_months(con, tag_fields(library), through=latest), library
            )
            stored = con.execute("SELECT * FROM publish.customer_tags").pl()
            history = con.execute("SELECT * FROM publish.customer_tag_history").pl()
        order = ["as_of_month", "customer_id", "tag_code"]
        assert stored.sort(order).equals(expected.sort(order))
        assert history.equals(tag_history(expected, latest))

    assert evaluated() == 1
    assert_whole()
    assert evaluated() == 0  # nothing changed
    assert_whole()
    with duckdb.connect(str(warehouse)) as con:  # as if the library had changed
        con.execute("UPDATE ops.tag_input_months SET library_digest = 'another'")
    assert evaluated() == months
    assert_whole()


def test_target_lists_honour_exclusions_capacity_and_the_files_match_the_table(built):
    everything = built.sql("SELECT * FROM publish.campaign_targets")
    status = built.sql("SELECT customer_id, status_code FROM marts.dim_customer")
    joined = everything.join(status, on="customer_id")
    assert joined.filter(pl.col("status_code").is_in(["2", "9"])).is_empty()
    risky = built.sql(
        "SELECT customer_id, as_of_month FROM ml.risk_scores WHERE risk_grade IN ('D', 'E')"
    )
    upsell = everything.filter(pl.col("campaign_code").is_in(["TOU_PACKAGE", "DEDICATED_MANAGER"]))
    assert upsell.join(risky, on=["customer_id", "as_of_month"]).is_empty()
    per_district = everything.filter(pl.col("campaign_code") == "TOU_PACKAGE").group_by(
        "as_of_month", "district_code"
    )
    assert (per_district.len()["len"].max() or 0) <= 60
    per_manager = everything.filter(pl.col("campaign_code") == "DEDICATED_MANAGER").group_by(
        "as_of_month", "account_manager_id"
    )
    assert (per_manager.len()["len"].max() or 0) <= 8
    # contacted in the first month's lists → not in the second month's cooling-off campaigns
    first, second = sorted(everything["as_of_month"].unique())
    cooled = [c["code"] for c in _campaigns() if "recently_contacted" in c["exclusions"]]
    before = set(everything.filter(pl.col("as_of_month") == first)["customer_id"])
    again = everything.filter(
        (pl.col("as_of_month") == second) & pl.col("campaign_code").is_in(cooled)
    )
    assert before and not (set(again["customer_id"]) & before)
    month = second
    targets = everything.filter(pl.col("as_of_month") == month)
    for code, rows in targets.group_by("campaign_code"):
        path = _publish_dir(built) / "campaigns" / f"{code[0]}_{month:%Y%m}.parquet"
        published = pl.read_parquet(path)
        assert published.select(rows.columns).sort("rank").equals(rows.sort("rank"))
        assert published["rank"].to_list() == list(range(1, len(rows) + 1))
        assert published["score"].is_sorted(descending=True)


def test_contacts_come_from_the_vault_only_where_the_channel_needs_them(built):
    con = duckdb.connect()
    attach_vault(con, built.vault, PII_KEY)
    vault = con.execute("SELECT cons_no, column_name, value FROM vault.customer_pii").pl()
    con.close()
    clear = {(r[0], r[1]): r[2] for r in vault.iter_rows()}
    folder = _publish_dir(built) / "campaigns"

    def fullest(code: str) -> pl.DataFrame:
        # The month with the most targets: the cooling-off period can empty a list.
        best = built.sql(
            "SELECT as_of_month FROM publish.campaign_runs WHERE campaign_code = ? "
            "ORDER BY targets DESC LIMIT 1",
            [code],
        )["as_of_month"][0]
        return pl.read_parquet(folder / f"{code}_{best:%Y%m}.parquet")

    sms, visit, push = (
        fullest(c) for c in ("PRE_DUE_REMINDER", "SPECIAL_CARE_VISIT", "NEW_ENERGY_CONSULT")
    )
    month = sms["as_of_month"][0]
    assert len(sms) and len(visit) and len(push)
    for row in sms.iter_rows(named=True):
        assert row["contact_mobile"] == clear.get((row["customer_id"], "MOBILE"))
        name = clear.get((row["customer_id"], "CONS_NAME"))
        assert row["contact_cons_name"] != name and row["contact_cons_name"].endswith("*")
        assert row["contact_addr"].endswith("****")
    for row in visit.iter_rows(named=True):
        assert row["contact_cons_name"] == clear.get((row["customer_id"], "CONS_NAME"))
        assert row["contact_addr"] == clear.get((row["customer_id"], "ADDR"))
    for row in push.iter_rows(named=True):
        assert "****" in (row["contact_mobile"] or "****")
        assert row["contact_cons_name"] != clear.get((row["customer_id"], "CONS_NAME"))
    # the CSV for Excel: UTF-8 with a BOM, Chinese headers, the same rows
    csv_path = folder / f"PRE_DUE_REMINDER_{month:%Y%m}.csv"
    assert csv_path.read_bytes()[:3] == b"\xef\xbb\xbf"
    assert pl.read_csv(csv_path, infer_schema=False).height == len(sms)
    # every value read from the vault is audited, none is stored in the audit
    audit = built.sql("SELECT * FROM ops.contact_audit WHERE as_of_month = ?", [month])
    targets = built.sql(
        "SELECT campaign_code, count(*) AS n FROM publish.campaign_targets "
        "WHERE as_of_month = ? GROUP BY 1",
        [month],
    )
    assert len(audit) == 3 * targets["n"].sum()
    clear_sms = audit.filter(
        (pl.col("campaign_code") == "PRE_DUE_REMINDER") & (pl.col("disclosure") == "clear")
    )
    assert set(clear_sms["field"]) == {"MOBILE"} and len(clear_sms) == len(sms)
    pushed = built.sql(
        "SELECT DISTINCT disclosure FROM ops.contact_audit "
        "WHERE campaign_code = 'NEW_ENERGY_CONSULT'"
    )
    assert pushed["disclosure"].to_list() == ["masked"]  # an app push needs no contact detail
    assert len(set(audit["dagster_run_id"])) == 1
    assert set(audit["dagster_run_id"]) <= {r.run_id for r in built.outcome.results}


def test_sla_compliance_agrees_with_a_count_from_the_work_orders(built):
    orders = built.sql(
        """SELECT o.*, d.area_type FROM marts.fct_work_orders o
           LEFT JOIN staging.districts d USING (district_code)"""
    )
    end = orders["accepted_at"].max()
    repairs = orders.filter(pl.col("order_type_en") == "repair").with_columns(
        pl.when(pl.col("area_type") == "rural").then(90).otherwise(45).alias("target")
    )
    measured = repairs.filter(
        ~pl.col("has_time_disorder") & pl.col("arrival_minutes").is_not_null()
    )
    met = measured.filter(pl.col("arrival_minutes") <= pl.col("target")).height
    late_open = repairs.filter(
        ~pl.col("has_time_disorder")
        & pl.col("arrived_at").is_null()
        & ~pl.col("is_finished")
        & ((end - pl.col("accepted_at")).dt.total_seconds() / 60 > pl.col("target"))
    ).height
    breached = measured.height - met + late_open
    mart = built.sql(
        """SELECT sum(met) AS met, sum(breached) AS breached, sum(orders) AS orders
           FROM publish.sla_compliance WHERE order_type_en = 'repair' AND measure = 'arrival'"""
    ).row(0, named=True)
    assert (mart["met"], mart["breached"]) == (met, breached)
    assert mart["orders"] == len(repairs)
    assert met > 0 and breached > 0


def test_kpis_add_up_to_the_features_and_the_work_orders(built):
    kpi = built.sql(
        """SELECT month, sum(customers) AS customers, sum(kwh) AS kwh,
                  sum(complaints) AS complaints
           FROM publish.kpi_monthly GROUP BY 1 ORDER BY 1"""
    )
    features = built.sql(
        """SELECT as_of_month AS month, count(*) AS customers, sum(kwh_month) AS kwh
           FROM marts.customer_features GROUP BY 1 ORDER BY 1"""
    )
    assert kpi["customers"].to_list() == features["customers"].to_list()
    assert (kpi["kwh"] - features["kwh"]).abs().max() < 1e-6 * features["kwh"].max()
    complaints = built.sql(
        """SELECT count(*) AS n FROM marts.fct_work_orders
           WHERE order_type_en = 'complaint' AND is_known_customer
             AND accepted_month IN (SELECT as_of_month FROM marts.customer_features)"""
    )["n"][0]
    assert kpi["complaints"].sum() == complaints
    segments = built.sql(
        """SELECT segment_code, customers FROM publish.kpi_monthly
           WHERE month = (SELECT max(as_of_month) FROM ml.customer_segments)
             AND segment_code <> 'unsegmented' ORDER BY 1"""
    )
    scored = built.sql(
        """SELECT segment_code, count(*) AS customers FROM ml.customer_segments
           WHERE as_of_month = (SELECT max(as_of_month) FROM ml.customer_segments)
           GROUP BY 1 ORDER BY 1"""
    )
    assert segments.equals(scored)


def test_every_segmented_customer_has_a_service_plan(built):
    missing = built.sql(
        """SELECT count(*) AS n FROM ml.customer_segments s
           LEFT JOIN publish.customer_service_plan p USING (customer_id, as_of_month)
           WHERE p.plan_code IS NULL"""
    )["n"][0]
    assert missing == 0
    managed = built.sql(
        """SELECT p.segment_code, count(p.account_manager_id) AS managed, count(*) AS n
           FROM publish.customer_service_plan p GROUP BY 1"""
    ).rows_by_key("segment_code", named=True, unique=True)
    assert managed["high_value_stable"]["managed"] == managed["high_value_stable"]["n"]
    assert managed["basic_need"]["managed"] == 0


def test_the_report_renders_in_headless_chromium_with_its_charts(built, chromium, tmp_path):
    from PIL import Image

    report = _publish_dir(built) / "report.html"
    page = report.resolve().as_uri()
    flags = [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(
        [chromium, *flags, "--dump-dom", page], capture_output=True, text=True, timeout=120
    ).stdout
    for section in ("segments", "kpi", "sla", "campaigns"):
        assert f'id="{section}"' in dom
    assert dom.count("<svg") >= 4
    # self-contained: no script, and nothing loaded from elsewhere
    assert "<script" not in dom
    assert not re.findall(r"""(?:src|href)\s*=\s*["'](?!data:|#)""", report.read_text("utf-8"))
    shot = tmp_path / "report.png"
    subprocess.run(
        [chromium, *flags, f"--screenshot={shot}", "--window-size=1280,2400", page],
        capture_output=True,
        timeout=120,
        check=True,
    )
    image = Image.open(shot).convert("L")
    histogram = image.histogram()
    white = histogram[255] / sum(histogram)
    assert white < 0.9, f"the rendered report is {white:.0%} white"
    assert len([v for v in histogram if v]) > 50  # charts and text, not a flat page


def test_the_feature_floor_computes_the_same_features_as_the_platform(built, tmp_path):
    # The benchmark's floor (one statement from the raw tables, bench/floor.py) must compute
    # what the platform computes, or its ratio means nothing.
    from bench.floor import (
        FLOOR_TABLE,
        compile_features,
        feature_disagreements,
        floor_sql,
        run_floor,
    )

    warehouse = tmp_path / "warehouse.duckdb"
    shutil.copy(built.warehouse, warehouse)
    sql = floor_sql(compile_features(warehouse, tmp_path / "target"))
    assert '"intermediate".' not in sql  # every SQL model is inlined, none read back
    # ...and none sorts its rows for the whole builds' layout, which computes nothing
    assert "order by date_trunc('month'" not in sql.lower()
    run_floor(warehouse, sql)
    with duckdb.connect(str(warehouse)) as con:
        found = feature_disagreements(con, "marts.customer_features", FLOOR_TABLE)
        rows = con.execute(f"select count(*) from {FLOOR_TABLE}").fetchone()[0]
        # One value changed is caught: agreement is not vacuous.
        con.execute(
            f"update {FLOOR_TABLE} set kwh_month = kwh_month + 1 "
            f"where customer_id = (select min(customer_id) from {FLOOR_TABLE})"
        )
        broken = feature_disagreements(con, "marts.customer_features", FLOOR_TABLE)
    assert found == {"only_in_first": 0, "only_in_second": 0, "columns": {}}
    assert rows == built.sql("select count(*) as n from marts.customer_features")["n"][0] > 0
    assert set(broken["columns"]) == {"kwh_month"}


def test_the_pandas_baseline_computes_the_same_features(built, tmp_path):
    # The benchmark's pandas baseline (bench/pandas_features.py) must compute every feature of
    # the platform's table and agree with it — on a drop with meter changes, spikes, wraps,
    # gaps, re-extracts, bill corrections, reversed payments, work-order versions, outages and
    # archive changes — or its ratio means nothing.
    import pandas as pd

    from bench.pandas_features import customer_features, disagreements, read_raw
    from ml.config import bookkeeping_columns

    features = customer_features(read_raw(built.warehouse))
    features.to_parquet(tmp_path / "pandas.parquet", index=False)
    found = disagreements(built.warehouse, tmp_path / "pandas.parquet")
    assert found["columns"] == {}
    assert found["rows_compared"] > 1000
    with duckdb.connect(str(built.warehouse), read_only=True) as con:
        platform = con.execute("select name from pragma_table_info('marts.customer_features')")
        columns = {name for (name,) in platform.fetchall()}
    assert (
        set(found["features"]) == columns - {"customer_id", "as_of_month"} - bookkeeping_columns()
    )
    # A changed value is caught in each family and kind of column: agreement is not vacuous.
    changed = features.copy()

    def customer_with(feature: str) -> pd.Series:
        return changed["customer_id"] == changed.loc[changed[feature] > 0, "customer_id"].max()

    first = changed["customer_id"] == changed["customer_id"].min()
    changed.loc[first, "kwh_12m"] += 1
    changed.loc[customer_with("tip_share_12m"), "tip_share_12m"] += 0.5
    changed.loc[customer_with("peak_kw_12m"), "peak_kw_12m"] += 1
    changed.loc[first, "tariff_code"] = "none"
    changed.loc[first, "is_tou_billed_12m"] = ~changed.loc[first, "is_tou_billed_12m"]
    changed.loc[first, "tenure_months"] += 1
    changed.loc[customer_with("late_bills_12m"), "late_bills_12m"] += 1
    changed.loc[customer_with("outages_12m"), "outages_12m"] += 1
    changed.to_parquet(tmp_path / "changed.parquet", index=False)
    broken = disagreements(built.warehouse, tmp_path / "changed.parquet")
    assert set(broken["columns"]) == {
        "kwh_12m",
        "tip_share_12m",
        "peak_kw_12m",
        "tariff_code",
        "is_tou_billed_12m",
        "tenure_months",
        "late_bills_12m",
        "outages_12m",
    }

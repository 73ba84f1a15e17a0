"""The incremental models: after late re-extracts, corrections, new months and moved
accounts, an incremental build rewrites only what changed and ends exactly where a full
rebuild ends; the data tests bounded by a build stamp read what the last build wrote.

Every test works on a copy of one warehouse built by a whole pipeline run (without the models
and publishing, which these tests never read) in this module's own process.
"""

import json
import shutil
import subprocess
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pytest

from orchestration.assets.warehouse import dbt_command, dbt_target_path
from tests.pipeline import Built, build_pipeline

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, dbt_manifest: Path) -> Iterator[Built]:
    with build_pipeline(tmp_path_factory.mktemp("warehouse"), dbt_manifest, 0) as pipeline:
        assert pipeline.outcome.success
        yield pipeline


def dbt(warehouse: Path, *args: str) -> list[str]:
    """A dbt command line against ``warehouse``, in the warehouse's own target folder, as the
    pipeline's: dbt's history of each node's seconds there is the warehouse's own."""
    return dbt_command(warehouse, dbt_target_path(warehouse), *args)


def test_incremental_load_models_rebuild_only_the_months_new_curves_touch(built, tmp_path):
    # A late re-extract of one month's curves (loaded after the last build, one point changed):
    # the incremental run must rebuild that month, leave the others as they were, and end
    # exactly where a full rebuild ends.
    tables = {
        "fct_daily_load_profile": ("marts", ["customer_id", "load_date"]),
        "int_customer_month_load": ("intermediate", ["customer_id", "load_month"]),
        # The view over the profile, compared too: what analysts query.
        "fct_hourly_load": ("marts", ["customer_id", "load_date", "hour_of_day"]),
    }
    models = ["fct_daily_load_profile", "int_customer_month_load"]
    warehouse = tmp_path / "warehouse.duckdb"
    shutil.copy(built.warehouse, warehouse)
    with duckdb.connect(str(warehouse)) as con:
        month = con.execute(
            "select min(date_trunc('month', DATA_DATE))::date from raw.ami__load_curve"
        ).fetchone()[0]
        con.execute(
            "create table before as select customer_id, load_month, source_loaded_at, peak_kw "
            "from intermediate.int_customer_month_load"
        )
        changed = con.execute(
            "update raw.ami__load_curve set _loaded_at = _loaded_at + interval 1 day, "
            "P5 = P5 + 100 where date_trunc('month', DATA_DATE) = ? and P5 is not null",
            [month],
        ).fetchone()[0]
    assert changed > 0
    run = ("run", "--quiet", "--select", *models)
    subprocess.run(dbt(warehouse, *run), check=True)
    # dbt closed without checkpointing (finegrid-dbt, orchestration/dbt_cli.py): what it wrote is in
    # the write-ahead log, which a copy takes with the file.
    assert Path(f"{warehouse}.wal").stat().st_size > 0
    full = tmp_path / "full.duckdb"
    shutil.copy(warehouse, full)
    shutil.copy(f"{warehouse}.wal", f"{full}.wal")
    subprocess.run(dbt(full, *run, "--full-refresh"), check=True)
    from bench.floor import disagreements

    with duckdb.connect(str(warehouse)) as con:
        con.execute(f"attach '{full}' as refreshed (read_only)")
        for name, (schema, keys) in tables.items():
            mine, theirs = f"{schema}.{name}", f"refreshed.{schema}.{name}"
            found = disagreements(con, mine, theirs, keys, ignore=["built_at"])
            assert found == {"only_in_first": 0, "only_in_second": 0, "columns": {}}, name
        # Only the rebuilt month carries the incremental build's stamp (the row tests read it).
        stamped = con.execute(
            "select distinct load_month from marts.fct_daily_load_profile "
            "where built_at = (select max(built_at) from marts.fct_daily_load_profile)"
        ).fetchall()
        assert stamped == [(month,)]
        rebuilt = con.execute(
            "select load_month, count(*) filter (where b.peak_kw <> a.peak_kw) "
            "from before b join intermediate.int_customer_month_load a "
            "using (customer_id, load_month) where b.source_loaded_at <> a.source_loaded_at "
            "group by all"
        ).fetchall()
    assert [r[0] for r in rebuilt] == [month]
    assert rebuilt[0][1] > 0  # the changed point reached the rebuilt month


# The staging models incremental by month: their raw table, their month column and the raw
# column it comes from.
STAGED_BY_MONTH = {
    "stg_mkt__customer_snapshots": ("mkt__cons_archive", "snapshot_month", "_period"),
    "stg_mkt__bills": ("mkt__monthly_bill", "bill_month", "BILL_YM"),
}


def test_the_archive_and_bills_staging_rebuild_only_the_months_loaded_since(built, tmp_path):
    # Built without the last archive and billing month. Then landed: that month; a re-extract
    # of an old archive month changing one account's capacity (a later file: it wins); one of
    # another old month from a file named earlier but loaded later (it loses); a correction of
    # an old bill. The incremental run must rewrite exactly those months (every row's
    # source_file is set to 'kept' first: a row still 'kept' was not rewritten) and end where
    # a full rebuild ends.
    warehouse = tmp_path / "warehouse.duckdb"
    shutil.copy(built.warehouse, warehouse)
    run = ("run", "--quiet", "--select", *STAGED_BY_MONTH)
    later = "now()::timestamp + interval 1 day"
    with duckdb.connect(str(warehouse)) as con:
        con.execute("create schema held")
        for raw, _, period in STAGED_BY_MONTH.values():
            con.execute(
                f"create table held.{raw} as select * from raw.{raw} "
                f"where {period} = (select max({period}) from raw.{raw})"
            )
            con.execute(
                f"delete from raw.{raw} where {period} in (select {period} from held.{raw})"
            )
    subprocess.run(dbt(warehouse, *run, "--full-refresh"), check=True)
    with duckdb.connect(str(warehouse)) as con:
        for model in STAGED_BY_MONTH:
            con.execute(f"update staging.{model} set source_file = 'kept'")
        for raw, _, _ in STAGED_BY_MONTH.values():
            con.execute(
                f"insert into raw.{raw} select * replace ({later} as _loaded_at) from held.{raw}"
            )
        periods = [
            r[0]
            for r in con.execute(
                "select distinct _period from raw.mkt__cons_archive order by 1"
            ).fetchall()
        ]
        won, lost = periods[1], periods[2]
        # An account in both months under its plain number (customer_id is the number
        # normalised), with one row in each.
        account, capacity, lost_capacity = con.execute(
            "select CONS_NO, any_value(CONTRACT_CAP) filter (where _period = $1), "
            "any_value(CONTRACT_CAP) filter (where _period = $2) from raw.mkt__cons_archive "
            "where _period in ($1, $2) and regexp_full_match(CONS_NO, '[0-9]{10}') "
            "and CONTRACT_CAP is not null group by CONS_NO having count(*) = 2 "
            "order by CONS_NO limit 1",
            [won, lost],
        ).fetchone()
        for period, name in [(won, "~re-extract"), (lost, "")]:
            # `~` sorts after the name's other characters, `` before the whole name.
            file = f"_source_file || '{name}'" if name else "'mkt/cons_archive/0.csv'"
            con.execute(
                f"insert into raw.mkt__cons_archive select * replace ({file} as _source_file, "
                f"CONTRACT_CAP + 7 as CONTRACT_CAP, {later} as _loaded_at) "
                "from raw.mkt__cons_archive where _period = ? and CONS_NO = ?",
                [period, account],
            )
        bill_months = [
            r[0]
            for r in con.execute(
                "select distinct BILL_YM from raw.mkt__monthly_bill order by 1"
            ).fetchall()
        ]
        corrected = bill_months[3]
        billed, amount = con.execute(
            "select CONS_NO, any_value(T_AMT) from raw.mkt__monthly_bill where BILL_YM = ? "
            "and regexp_full_match(CONS_NO, '[0-9]{10}') group by CONS_NO "
            "having count(*) = 1 and any_value(BILL_FLAG) = 'N' order by CONS_NO limit 1",
            [corrected],
        ).fetchone()
        con.execute(
            "insert into raw.mkt__monthly_bill select * replace ('C' as BILL_FLAG, "
            "T_AMT + 11 as T_AMT, 'mkt/monthly_bill/monthly_bill_29991231.csv' as _source_file, "
            f"{later} as _loaded_at) from raw.mkt__monthly_bill where BILL_YM = ? and CONS_NO = ?",
            [corrected, billed],
        )
    subprocess.run(dbt(warehouse, *run), check=True)
    full = tmp_path / "full.duckdb"
    shutil.copy(warehouse, full)
    subprocess.run(dbt(full, *run, "--full-refresh"), check=True)
    from bench.floor import disagreements

    month = "strftime({}, '%Y%m')"
    with duckdb.connect(str(warehouse)) as con:
        con.execute(f"attach '{full}' as refreshed (read_only)")
        rewritten = {
            model: [
                r[0]
                for r in con.execute(
                    f"select distinct {month.format(column)} from staging.{model} "
                    f"where source_file <> 'kept' order by 1"
                ).fetchall()
            ]
            for model, (_, column, _) in STAGED_BY_MONTH.items()
        }
        for model, (_, column, _) in STAGED_BY_MONTH.items():
            found = disagreements(
                con,
                f"staging.{model}",
                f"refreshed.staging.{model}",
                ["customer_id", column],
                ignore=["source_file"],
            )
            assert found == {"only_in_first": 0, "only_in_second": 0, "columns": {}}, model
            assert con.execute(
                f"select (select count(*) from staging.{model}) "
                f"= (select count(*) from refreshed.staging.{model})"
            ).fetchone()[0], model
        kept_capacity = dict(
            con.execute(
                "select strftime(snapshot_month, '%Y%m'), contract_capacity_kva "
                f"from staging.stg_mkt__customer_snapshots where customer_id = '{account}' "
                f"and strftime(snapshot_month, '%Y%m') in ('{won}', '{lost}')"
            ).fetchall()
        )
        bill = con.execute(
            "select amount_yuan, is_correction from staging.stg_mkt__bills "
            f"where customer_id = '{billed}' and strftime(bill_month, '%Y%m') = '{corrected}'"
        ).fetchone()
    archive_last = max(periods)
    assert rewritten["stg_mkt__customer_snapshots"] == sorted({won, lost, archive_last})
    assert rewritten["stg_mkt__bills"] == sorted({corrected, max(bill_months)})
    assert kept_capacity == {won: capacity + 7, lost: lost_capacity}
    assert bill == (amount + 11, True)


def test_payments_rebuild_only_the_payments_new_extracts_change(built, tmp_path):
    # Landed after the build, in two loads: a reversal of a payment no extract holds yet; then
    # that payment, a re-extract of an old payment with another amount, a new reversal of an
    # old payment, and a re-extract of an old reversal as a plain payment (the payment it
    # cancelled counts again). Beside them, two of fct_payments' rows are made stale (a
    # customer's standing, a channel's label). Each incremental run must rewrite exactly the
    # payments these change, and both tables end where a full rebuild ends.
    warehouse = tmp_path / "warehouse.duckdb"
    shutil.copy(built.warehouse, warehouse)
    run = ("run", "--quiet", "--select", "stg_fin__payments", "fct_payments")
    staged, facts = "staging.stg_fin__payments", "marts.fct_payments"

    def land(con: duckdb.DuckDBPyConnection, pay_sn: str, changes: str, like: str) -> None:
        # A row as a later extract brings it, copied from payment `like`.
        con.execute(
            f"insert into raw.fin__payment select * replace ('{pay_sn}' as PAY_SN, {changes}, "
            "'fin/payment/payment_29991231.csv' as _source_file, "
            "now()::timestamp + interval 1 day as _loaded_at) "
            "from raw.fin__payment where PAY_SN = ? qualify row_number() over () = 1",
            [like],
        )

    def rewritten(con: duckdb.DuckDBPyConnection, table: str, since) -> list[str]:
        stamp = "built_at" if table == staged else "staged_at"
        return sorted(
            r[0]
            for r in con.execute(
                f"select payment_id from {table} where {stamp} > ?", [since]
            ).fetchall()
        )

    with duckdb.connect(str(warehouse)) as con:
        (before,) = con.execute(f"select max(built_at) from {staged}").fetchone()
        plain = [
            r[0]
            for r in con.execute(
                f"select payment_id from {staged} where not is_reversal and not is_cancelled "
                "and customer_id is not null order by payment_id limit 3"
            ).fetchall()
        ]
        reversal, cancelled = con.execute(
            f"select payment_id, reversed_payment_id from {staged} where is_reversal "
            "and not is_unmatched_reversal and reversed_payment_id in (select "
            f"reversed_payment_id from {staged} group by 1 having count(*) = 1) "
            "order by payment_id limit 1"
        ).fetchone()
        land(con, "TEST-REV-ORPHAN", "'1' as REV_FLAG, 'TEST-LATE' as ORIG_PAY_SN", plain[0])
    subprocess.run(dbt(warehouse, *run), check=True)
    with duckdb.connect(str(warehouse)) as con:
        assert rewritten(con, staged, before) == ["TEST-REV-ORPHAN"]
        assert rewritten(con, facts, before) == ["TEST-REV-ORPHAN"]
        assert con.execute(
            f"select is_unmatched_reversal from {staged} where payment_id = 'TEST-REV-ORPHAN'"
        ).fetchone() == (True,)
        (first,) = con.execute(f"select max(built_at) from {staged}").fetchone()
        land(con, "TEST-LATE", "'0' as REV_FLAG, null as ORIG_PAY_SN", plain[0])
        land(con, plain[1], "PAY_AMT + 100 as PAY_AMT", plain[1])
        land(con, "TEST-REV-NEW", f"'1' as REV_FLAG, '{plain[2]}' as ORIG_PAY_SN", plain[2])
        land(con, reversal, "'0' as REV_FLAG, null as ORIG_PAY_SN", reversal)
        # Stale rows of the facts: what the build must mend without new extracts.
        known, labelled = con.execute(
            f"select payment_id from {facts} where payment_id not in "
            "('TEST-REV-ORPHAN', ?, ?, ?, ?) order by payment_id limit 2",
            [*plain, reversal],
        ).fetchall()
        con.execute(
            f"update {facts} set is_known_customer = not is_known_customer where payment_id = ?",
            [known[0]],
        )
        con.execute(f"update {facts} set pay_channel = 'stale' where payment_id = ?", [labelled[0]])
    subprocess.run(dbt(warehouse, *run), check=True)
    changed = sorted(
        ["TEST-LATE", "TEST-REV-ORPHAN", plain[1], "TEST-REV-NEW", plain[2], reversal, cancelled]
    )
    with duckdb.connect(str(warehouse)) as con:
        assert rewritten(con, staged, first) == changed
        assert rewritten(con, facts, first) == changed
        rows = {
            r[0]: r[1:]  # (net amount, cancelled, unmatched reversal)
            for r in con.execute(
                f"select payment_id, net_amount_yuan, is_cancelled, is_unmatched_reversal "
                f"from {staged} where payment_id in ('TEST-REV-ORPHAN', ?, ?, ?)",
                [plain[2], reversal, cancelled],
            ).fetchall()
        }
    assert rows["TEST-REV-ORPHAN"][2] is False  # its payment has come
    assert rows[plain[2]][:2] == (0, True)  # cancelled by the new reversal
    assert rows[reversal][0] != 0 and rows[cancelled][1] is False  # a payment again

    full = tmp_path / "full.duckdb"
    shutil.copy(warehouse, full)
    subprocess.run(dbt(full, *run, "--full-refresh"), check=True)
    from bench.floor import disagreements

    with duckdb.connect(str(warehouse)) as con:
        con.execute(f"attach '{full}' as refreshed (read_only)")
        for table in (staged, facts):
            found = disagreements(
                con, table, f"refreshed.{table}", ["payment_id"], ignore=["built_at", "staged_at"]
            )
            assert found == {"only_in_first": 0, "only_in_second": 0, "columns": {}}, table
            assert con.execute(
                f"select (select count(*) from {table}) = (select count(*) from refreshed.{table})"
            ).fetchone()[0], table

    # Facts built before `staged_at` existed are rewritten whole once, and gain the column.
    with duckdb.connect(str(full)) as con:
        con.execute(f"alter table {facts} drop column staged_at")
    subprocess.run(dbt(full, "run", "--quiet", "--select", "fct_payments"), check=True)
    with duckdb.connect(str(full)) as con:
        assert con.execute(
            f"select count(*) = count(staged_at) and count(*) > 0 from {facts}"
        ).fetchone()[0]


# The models computed whole and written where they changed (macros/changed_rows.sql): a change
# that makes a row stale, and a key value no build computes. Schema and key: the manifest's.
WRITTEN_WHERE_CHANGED = {
    "int_customer_months": ("district_code = 'stale'", ("as_of_month", "date '1990-01-01'")),
    "fct_customer_outages": ("outage_type_en = 'stale'", ("outage_id", "'GONE'")),
}


def test_tables_computed_whole_are_written_only_where_they_changed(built, tmp_path, dbt_manifest):
    # In each table, one row made stale, one deleted and one added under a key no build
    # computes. An incremental run must write back exactly the first two (every other row keeps
    # its place in the table: its rowid), delete the third, and end where a full rebuild ends.
    nodes = json.loads(dbt_manifest.read_text("utf-8"))["nodes"]
    models = {
        name: (node["schema"], node["config"]["unique_key"], *WRITTEN_WHERE_CHANGED[name])
        for node in nodes.values()
        if (name := node["name"]) in WRITTEN_WHERE_CHANGED and node["resource_type"] == "model"
    }
    assert set(models) == set(WRITTEN_WHERE_CHANGED)
    warehouse = tmp_path / "warehouse.duckdb"
    shutil.copy(built.warehouse, warehouse)
    run = ("run", "--quiet", "--select", *WRITTEN_WHERE_CHANGED)
    touched = {}
    with duckdb.connect(str(warehouse)) as con:
        for model, (schema, keys, stale, (column, value)) in models.items():
            table, key = f"{schema}.{model}", ", ".join(keys)
            where = " and ".join(f"{k} = ?" for k in keys)
            first, second = con.execute(
                f"select {key} from {table} where {' and '.join(f'{k} is not null' for k in keys)} "
                f"order by {key} limit 2"
            ).fetchall()
            con.execute(f"update {table} set {stale} where {where}", list(first))
            con.execute(
                f"insert into {table} select * replace ({value} as {column}) from {table} "
                f"where {where}",
                list(second),
            )
            con.execute(f"delete from {table} where {where}", list(second))
            con.execute(
                f"create table main.before_{model} as select {key}, rowid as kept_rowid "
                f"from {table}"
            )
            touched[model] = sorted([first, second])
    subprocess.run(dbt(warehouse, *run), check=True)
    full = tmp_path / "full.duckdb"
    shutil.copy(warehouse, full)
    subprocess.run(dbt(full, *run, "--full-refresh"), check=True)
    from bench.floor import disagreements

    with duckdb.connect(str(warehouse)) as con:
        con.execute(f"attach '{full}' as refreshed (read_only)")
        for model, (schema, keys, _, (column, value)) in models.items():
            table, key = f"{schema}.{model}", ", ".join(keys)
            written = con.execute(
                f"select {', '.join(f't.{k}' for k in keys)} from {table} as t "
                f"left join main.before_{model} using ({key}) "
                "where kept_rowid is distinct from t.rowid order by all"
            ).fetchall()
            assert written == touched[model], model
            gone = con.execute(f"select count(*) from {table} where {column} = {value}")
            assert gone.fetchone()[0] == 0, model
            found = disagreements(con, table, f"refreshed.{table}", keys)
            assert found == {"only_in_first": 0, "only_in_second": 0, "columns": {}}, model
            assert con.execute(
                f"select (select count(*) from {table}) = (select count(*) from refreshed.{table})"
            ).fetchone()[0], model


def test_customer_features_rebuild_a_customer_from_the_first_month_its_inputs_changed(
    built, tmp_path
):
    # Four changes since the features were built: a new month (its rows missing), a payment of
    # one customer in an old month withdrawn (a late reversal), a month past a closed
    # account's last (gone from the archive) and a customer no source knows. An incremental
    # run must rewrite exactly the rows they touch and end where a full rebuild ends. Every
    # kept row's kwh_12m is set to -1 first: a row still at -1 was not rewritten.
    run = ("run", "--quiet", "--select", "stg_fin__payments+,+customer_features")
    table = "marts.customer_features"
    tampered, warehouse = tmp_path / "tampered.duckdb", tmp_path / "warehouse.duckdb"
    shutil.copy(built.warehouse, warehouse)
    with duckdb.connect(str(warehouse)) as con:
        (last,) = con.execute(f"select max(as_of_month) from {table}").fetchone()
        corrected, paid_month, pay_sn = con.execute(
            "select customer_id, paid_month, payment_id from marts.fct_payments "
            "where is_known_customer and not is_reversal and not is_cancelled "
            f"and paid_month = (select min(as_of_month) + interval 6 month from {table}) "
            "order by payment_id limit 1"
        ).fetchone()
        closed, closed_last = con.execute(
            f"select customer_id, max(as_of_month) from {table} group by all "
            "having max(as_of_month) < ? order by 1 limit 1",
            [last],
        ).fetchone()
        con.execute(f"delete from {table} where as_of_month = ?", [last])
        # Raw tables only grow: the payment is withdrawn by a reversal a later extract brings,
        # paid the same moment (so the same month).
        con.execute(
            "insert into raw.fin__payment select * replace (PAY_SN || '-R' as PAY_SN, "
            "'1' as REV_FLAG, PAY_SN as ORIG_PAY_SN, -PAY_AMT as PAY_AMT, "
            "'fin/payment/payment_29991231.csv' as _source_file, 1 as _row_number, "
            "now()::timestamp + interval 1 day as _loaded_at) "
            "from raw.fin__payment where PAY_SN = ?",
            [pay_sn],
        )
        con.execute(
            f"insert into {table} select * replace (as_of_month + interval 1 month as as_of_month) "
            f"from {table} where customer_id = ? and as_of_month = ?",
            [closed, closed_last],
        )
        con.execute(
            f"insert into {table} select * replace ('0000000000' as customer_id) "
            f"from {table} where customer_id = ?",
            [corrected],
        )
    shutil.copy(warehouse, tampered)
    with duckdb.connect(str(tampered)) as con:
        con.execute(f"update {table} set kwh_12m = -1")
    for copy in (warehouse, tampered):
        subprocess.run(dbt(copy, *run), check=True)

    with duckdb.connect(str(tampered), read_only=True) as con:
        rewritten = con.execute(
            f"select customer_id, list(distinct as_of_month order by as_of_month) from {table} "
            "where kwh_12m <> -1 and as_of_month < ? group by all",
            [last],
        ).fetchall()
        months = [
            r[0]
            for r in con.execute(
                f"select as_of_month from {table} where customer_id = ? and as_of_month >= ? "
                "and as_of_month < ? order by 1",
                [corrected, paid_month, last],
            ).fetchall()
        ]
        new_month = con.execute(
            f"select count(*), count(*) filter (where kwh_12m = -1) from {table} "
            "where as_of_month = ?",
            [last],
        ).fetchone()
        gone = con.execute(
            f"select count(*) filter (where customer_id = '0000000000'), "
            f"count(*) filter (where customer_id = ? and as_of_month > ?) from {table}",
            [closed, closed_last],
        ).fetchone()
    assert rewritten == [(corrected, months)] and months[0] == paid_month
    assert new_month[0] > 0 and new_month[1] == 0
    assert gone == (0, 0)

    full = tmp_path / "full.duckdb"
    shutil.copy(warehouse, full)
    subprocess.run(dbt(full, *run, "--full-refresh"), check=True)
    from bench.floor import disagreements

    with duckdb.connect(str(warehouse)) as con:
        con.execute(f"attach '{full}' as refreshed (read_only)")
        found = disagreements(con, table, f"refreshed.{table}", ["customer_id", "as_of_month"])
    # inputs_hash too, exactly: the inputs of unchanged months hash alike from build to build.
    assert found == {"only_in_first": 0, "only_in_second": 0, "columns": {}}

    # A table built before the hash existed cannot be brought up to date: the build says how.
    with duckdb.connect(str(full)) as con:
        con.execute(f"alter table {table} drop column inputs_hash")
    old = subprocess.run(dbt(full, *run), capture_output=True, text=True)
    assert old.returncode == 1 and "make rebuild" in old.stdout, old.stdout[-2000:]


ENERGY_MODELS = {
    # model: (its key, its bookkeeping columns, which a rebuild may change)
    "int_meter_readings": (["meter_id", "reading_date"], ("computed_at",)),
    "int_daily_energy": (["customer_id", "energy_date"], ("readings_computed_at", "built_at")),
    "int_customer_month_usage": (
        ["customer_id", "usage_month"],
        ("energy_computed_at", "weather_loaded_at"),
    ),
}


def _differences(warehouse: Path, reference: Path) -> dict[str, int]:
    """Per energy model, the rows in one warehouse and not the other, and the values that
    differ (to 1e-9 relative: DuckDB sums a day's pieces, and a month's days, in no fixed
    order), bookkeeping columns aside."""
    from bench.floor import disagreements

    found = {}
    with duckdb.connect(str(warehouse)) as con:
        con.execute(f"attach '{reference}' as reference (read_only)")
        for model, (keys, bookkeeping) in ENERGY_MODELS.items():
            mine, theirs = f"intermediate.{model}", f"reference.intermediate.{model}"
            differing = disagreements(con, mine, theirs, keys)
            (rows,) = con.execute(
                f"select (select count(*) from {mine}) - (select count(*) from {theirs})"
            ).fetchone()
            found[model] = (
                abs(rows)  # a key twice in one of them
                + differing["only_in_first"]
                + differing["only_in_second"]
                + sum(n for c, n in differing["columns"].items() if c not in bookkeeping)
            )
    return found


def _data_test_after_writes(
    built, tmp_path: Path, select: str
) -> tuple[Path, Callable[[str], subprocess.CompletedProcess]]:
    """A copy of the built warehouse, and a function that runs SQL on it, then the data tests
    `select` names: for the tests bounded by a build stamp, rows written as a build would."""
    copy = tmp_path / "warehouse.duckdb"
    shutil.copy(built.warehouse, copy)

    def run(statement: str) -> subprocess.CompletedProcess:
        with duckdb.connect(str(copy)) as con:
            con.execute(statement)
        command = dbt(copy, "test", "--select", select)
        return subprocess.run(command, capture_output=True, text=True, timeout=600)

    return copy, run


@pytest.mark.parametrize(
    ("table", "stamp", "day"),
    [
        ("intermediate.int_daily_energy", "readings_computed_at", "energy_date"),
        ("marts.fct_daily_load_profile", "built_at", "load_date"),
    ],
)
def test_a_stamped_key_test_counts_what_the_last_build_wrote(built, tmp_path, table, stamp, day):
    # After a full build every row has one stamp and all are counted; after an incremental one,
    # the keys the build wrote, each against the whole table.
    model = table.split(".")[1]
    copy, key_test = _data_test_after_writes(
        built, tmp_path, f"{model},test_name:unique_combination"
    )

    with duckdb.connect(str(copy), read_only=True) as con:
        assert con.execute(f"SELECT count(DISTINCT {stamp}) FROM {table}").fetchone() == (1,)
    old_day = f"(SELECT * FROM {table} ORDER BY customer_id, {day} LIMIT 1)"
    passed = key_test("SELECT 1")
    assert passed.returncode == 0 and "PASS=1 " in passed.stdout, passed.stdout[-2000:]
    # A second row for an old key, written by a later build.
    later = key_test(
        f"INSERT INTO {table} SELECT * REPLACE ({stamp} + INTERVAL 1 DAY AS {stamp}) FROM {old_day}"
    )
    assert later.returncode == 1 and "Got 1 result" in later.stdout, later.stdout[-2000:]
    # The same within a full build: every row has the same stamp.
    full = key_test(
        f"DELETE FROM {table} WHERE {stamp} > (SELECT min({stamp}) FROM {table}); "
        f"INSERT INTO {table} SELECT * FROM {old_day}"
    )
    assert full.returncode == 1 and "Got 1 result" in full.stdout, full.stdout[-2000:]
    # That pair was counted when it was written: once a later build writes other keys only,
    # they are counted, and the pair is not read again.
    older = key_test(
        f"UPDATE {table} SET {stamp} = {stamp} + INTERVAL 1 DAY "
        f"WHERE customer_id = (SELECT max(customer_id) FROM {table})"
    )
    assert older.returncode == 0 and "PASS=1 " in older.stdout, older.stdout[-2000:]


def test_the_load_profile_list_test_reads_what_the_last_build_wrote(built, tmp_path):
    # A day with 23 hours in its lists fails the test when the newest build wrote it, or when
    # one build wrote every row (a full build); a row an earlier build wrote is not read again.
    test = "fct_daily_load_profile,test_name:expression_holds"
    _, list_test = _data_test_after_writes(built, tmp_path, test)
    table = "marts.fct_daily_load_profile"
    bad_day = (
        f"SELECT * REPLACE (avg_kw[1:23] AS avg_kw, built_at + INTERVAL '{{}}' AS built_at) "
        f"FROM (SELECT * FROM {table} ORDER BY customer_id, load_date LIMIT 1)"
    )
    passed = list_test("SELECT 1")
    assert passed.returncode == 0 and "PASS=1 " in passed.stdout, passed.stdout[-2000:]
    newest = list_test(f"INSERT INTO {table} " + bad_day.format("1 day"))
    assert newest.returncode == 1 and "Got 1 result" in newest.stdout, newest.stdout[-2000:]
    older = list_test(
        f"DELETE FROM {table} WHERE len(avg_kw) = 23; "
        f"INSERT INTO {table} " + bad_day.format("-1 day")
    )
    assert older.returncode == 0 and "PASS=1 " in older.stdout, older.stdout[-2000:]
    full = list_test(f"UPDATE {table} SET built_at = TIMESTAMP '2030-01-01'")
    assert full.returncode == 1 and "Got 1 result" in full.stdout, full.stdout[-2000:]


def test_incremental_energy_models_rebuild_only_what_new_readings_change(built, tmp_path):
    # The energy models rebuild, per meter and customer, only what rows loaded since their last
    # build can change. Held back: the last month's readings and meter changes. Made to straddle
    # the month boundary: a spike on the last day before it (a spike only once the next
    # reading arrives) and a gap across it (its energy spreads back into the month before).
    # A series silent for six weeks before the new month, its last point a spike once the next
    # reading arrives: the meter readings look the kept points up from a month before the
    # new ones, and must look this one up in the whole table. A meter with an old series under
    # another account: only the series new rows name is rebuilt. Then a late re-extract of an
    # old reading, and one moved to another account. After each incremental run the tables
    # must equal a full rebuild's.
    warehouse = tmp_path / "warehouse.duckdb"
    shutil.copy(built.warehouse, warehouse)
    models = list(ENERGY_MODELS)
    run = ("run", "--quiet", "--select", *models)
    with duckdb.connect(str(warehouse)) as con:
        last = con.execute(
            "select max(date_trunc('month', DATA_DATE))::date from raw.ami__daily_reading"
        ).fetchone()[0]
        meters = [
            r[0]
            for r in con.execute(
                "select METER_ID from raw.ami__daily_reading where DATA_DATE = ? - 1 "
                "and PAP_R > 100 group by all order by METER_ID limit 5",
                [last],
            ).fetchall()
        ]
        spiked, gapped, silent, far, shared = meters
        con.execute(
            "delete from raw.ami__daily_reading where METER_ID = ? "
            "and DATA_DATE between ? - 45 and ? - 1",
            [far, last, last],
        )
        (far_last,) = con.execute(
            "select max(DATA_DATE) from raw.ami__daily_reading "
            "where METER_ID = ? and DATA_DATE < ? - 45",
            [far, last],
        ).fetchone()
        con.execute(
            "update raw.ami__daily_reading set PAP_R = PAP_R + 5000 "
            "where METER_ID = ? and DATA_DATE = ?",
            [far, far_last],
        )
        con.execute(
            "update raw.ami__daily_reading set CONS_NO = '8888888888' "
            "where METER_ID = ? and DATA_DATE < ? - 60",
            [shared, last],
        )
        # A meter silent for weeks before its last reading of the month, from before the far
        # series' spike: the daily energy's incremental build, which reads the points from a
        # month before the first rebuilt one (that spike), must read the whole table for it.
        con.execute(
            "delete from raw.ami__daily_reading where METER_ID = ? "
            "and (DATA_DATE between ?::date - 40 and ? - 10 or DATA_DATE between ? - 8 and ? - 1)",
            [silent, far_last, last, last, last],
        )
        con.execute(
            "update raw.ami__daily_reading set PAP_R = PAP_R + 5000 "
            "where METER_ID = ? and DATA_DATE = ? - 1",
            [spiked, last],
        )
        con.execute(
            "delete from raw.ami__daily_reading where METER_ID = ? "
            "and DATA_DATE between ? - 3 and ? + 2",
            [gapped, last, last],
        )
        con.execute("create schema held")
        con.execute(
            "create table held.daily as select * from raw.ami__daily_reading where DATA_DATE >= ?",
            [last],
        )
        con.execute(
            "create table held.changes as select * from raw.ami__meter_change "
            "where CHANGE_DATE >= ? - 1",
            [last],
        )
        held_changes = con.execute("select count(*) from held.changes").fetchone()[0]
        con.execute("delete from raw.ami__daily_reading where DATA_DATE >= ?", [last])
        con.execute("delete from raw.ami__meter_change where CHANGE_DATE >= ? - 1", [last])
    assert held_changes > 0  # a meter change in the new month
    subprocess.run(dbt(warehouse, *run, "--full-refresh"), check=True)
    with duckdb.connect(str(warehouse)) as con:  # as built by a version before its stamps
        con.execute("alter table intermediate.int_daily_energy drop column built_at")

    compiled = (
        dbt_target_path(warehouse) / "compiled/finegrid/models/intermediate/int_daily_energy.sql"
    )
    read_from_a_day = []  # per increment: did the daily energy read the points from a day on?
    usage_sql = compiled.with_name("int_customer_month_usage.sql")
    # per increment: did the monthly usage read apart the days of customers it rebuilt whole?
    read_whole_apart = []

    def increment(statements: list[str]) -> dict[str, int]:
        with duckdb.connect(str(warehouse)) as con:
            for sql in statements:
                con.execute(sql)
        subprocess.run(dbt(warehouse, *run), check=True)
        read_from_a_day.append("where reading_date >= date" in compiled.read_text())
        read_whole_apart.append("rebuild.rebuild_from = date '0001-01-01'" in usage_sql.read_text())
        full = tmp_path / "full.duckdb"
        shutil.copy(warehouse, full)
        subprocess.run(dbt(full, *run, "--full-refresh"), check=True)
        return _differences(warehouse, full)

    with duckdb.connect(str(warehouse), read_only=True) as con:
        first_build = con.execute(
            "select max(computed_at) from intermediate.int_meter_readings"
        ).fetchone()[0]

    def point(con: duckdb.DuckDBPyConnection, meter: str, day: date) -> tuple[bool, bool]:
        """Is the meter's point of the day a spike, and was it rebuilt since the first build?"""
        return con.execute(
            "select is_spike, computed_at > ? from intermediate.int_meter_readings "
            "where meter_id = ? and reading_date = ?",
            [first_build, meter, day],
        ).fetchone()

    later = "now()::timestamp + interval 1 day"
    landed = increment(
        [
            f"insert into raw.ami__daily_reading select * replace ({later} as _loaded_at) "
            "from held.daily",
            f"insert into raw.ami__meter_change select * replace ({later} as _loaded_at) "
            "from held.changes",
        ]
    )
    assert landed == {model: 0 for model in models}
    with duckdb.connect(str(warehouse), read_only=True) as con:
        # Only the last days before the new month were rebuilt, besides the new month.
        before_month, kept = con.execute(
            "select count(*) filter (where computed_at > ? and reading_date < ?), "
            "count(*) filter (where computed_at = ?) from intermediate.int_meter_readings",
            [first_build, last, first_build],
        ).fetchone()
        meters = con.execute(
            "select count(distinct meter_id) from intermediate.int_meter_readings "
            "where computed_at > ?",
            [first_build],
        ).fetchone()[0]
        # The stamp column added to the table as it was: empty in the days kept, set in
        # those written (the snapshot fingerprints the days by it).
        kept_days, new_days_unstamped = con.execute(
            "select count(*) filter (where built_at is null), "
            "count(*) filter (where energy_date >= ? and built_at is null) "
            "from intermediate.int_daily_energy",
            [last],
        ).fetchone()
        spike, _ = point(con, spiked, last - timedelta(days=1))
        far_spike, far_rebuilt = point(con, far, far_last)
        shared_series = con.execute(
            "select customer_id = '8888888888', bool_or(computed_at > ?) "
            "from intermediate.int_meter_readings where meter_id = ? group by all order by 1",
            [first_build, shared],
        ).fetchall()
        gap_days = con.execute(
            "select count(*) from intermediate.int_daily_energy e "
            "join intermediate.int_meter_readings r on r.customer_id = e.customer_id "
            "and r.meter_id = ? and r.reading_date = ? + 3 "
            "where e.energy_date between ? - 3 and ? + 2 and e.is_estimated",
            [gapped, last, last, last],
        ).fetchone()[0]
    assert kept_days > 0 and new_days_unstamped == 0
    assert spike  # flagged once its next reading arrived
    assert far_spike and far_rebuilt
    assert shared_series == [(False, True), (True, False)]  # the old account's series kept
    assert gap_days == 6  # the gap's energy spread over both months' days
    # Not a rebuild of everything: a few points before the new month per meter (its last one,
    # and more for a meter in a gap or changed), the rest kept as they were.
    assert kept > 0 and 0 < before_month < 3 * meters

    # A late re-extract of an old month's reading (a later file wins), then the same day
    # re-extracted under another account: the rebuild of everything.
    reextract = (
        "insert into raw.ami__daily_reading select * replace ({value} as PAP_R, "
        "{cons_no} as CONS_NO, 'ami/daily_reading/daily_reading_29991231{n}.parquet' "
        f"as _source_file, {later} + interval {{n}} hour as _loaded_at) "
        "from raw.ami__daily_reading where METER_ID = "
        f"'{spiked}' and DATA_DATE = date '{last}' - 200 "
        "order by _source_file desc limit 1"
    )

    def rebuilt_share() -> float:
        with duckdb.connect(str(warehouse), read_only=True) as con:
            return con.execute(
                "select avg((computed_at = (select max(computed_at) from "
                "intermediate.int_meter_readings))::int) from intermediate.int_meter_readings"
            ).fetchone()[0]

    late = increment([reextract.format(value="PAP_R - 0.5", cons_no="CONS_NO", n=1)])
    assert late == {model: 0 for model in models}
    assert rebuilt_share() < 0.5
    # The new month read the whole table (the silent meter); the late re-extract, from a day.
    assert read_from_a_day == [False, True]

    # The monthly usage adds up days with their district's weather: a late re-extract of an
    # old day's weather, a customer the archive moved to another district and one it no
    # longer knows each change months the readings did not touch.
    def usage() -> set[tuple]:
        with duckdb.connect(str(warehouse), read_only=True) as con:
            return set(
                con.execute(
                    "select customer_id, usage_month, cool_x, heat_x "
                    "from intermediate.int_customer_month_usage"
                ).fetchall()
            )

    usage_before = usage()
    with duckdb.connect(str(warehouse), read_only=True) as con:
        moved_customer, weather_day, district = con.execute(
            "select u.customer_id, w.weather_date, w.district_code "
            "from intermediate.int_customer_month_usage u "
            "join staging.stg_ext__weather_daily w on w.district_code = u.district_code "
            f"and w.weather_date = date '{last}' - 300 order by u.customer_id limit 1"
        ).fetchone()
        other = con.execute(
            "select min(district_code) from marts.dim_customer where district_code <> ?",
            [district],
        ).fetchone()[0]
        forgotten = con.execute(
            "select max(customer_id) from intermediate.int_customer_month_usage "
            "where customer_id <> ?",
            [moved_customer],
        ).fetchone()[0]
    weather = increment(
        [
            "insert into raw.ext__weather_daily select * replace (T_MAX + 8 as T_MAX, "
            "T_MIN + 8 as T_MIN, _source_file || '.reextract' as _source_file, "
            f"{later} + interval 3 hour as _loaded_at) "
            f"from raw.ext__weather_daily where DATE = date '{weather_day}' "
            f"and DISTRICT_CODE = '{district}'",
            f"update marts.dim_customer set district_code = '{other}' "
            f"where customer_id = '{moved_customer}'",
            "create table held.forgotten as select * from marts.dim_customer "
            f"where customer_id = '{forgotten}'",
            f"delete from marts.dim_customer where customer_id = '{forgotten}'",
        ]
    )
    assert weather == {model: 0 for model in models}
    usage_after = usage()
    changed = {(c, m) for c, m, *_ in usage_after - usage_before}
    month = weather_day.replace(day=1)
    assert any(m == month and c != moved_customer for c, m in changed)  # the weather's month
    assert {m for c, m in changed if c == moved_customer} - {month}  # every month of the move
    assert forgotten in {c for c, *_ in usage_before}
    assert forgotten not in {c for c, *_ in usage_after}  # its rows deleted, none inserted

    # A move with nothing else to rebuild: only the days of customers rebuilt whole are read.
    second = min(c for c, *_ in usage_after if c not in (moved_customer, forgotten))
    alone = increment(
        [
            "update marts.dim_customer set district_code = case when district_code = "
            f"'{district}' then '{other}' else '{district}' end where customer_id = '{second}'"
        ]
    )
    assert alone == {model: 0 for model in models}
    changed = {(c, m) for c, m, *_ in usage() - usage_after}
    assert {c for c, _ in changed} == {second}
    assert len(changed) > 1
    assert read_whole_apart[-1]  # its days before any other customer's rebuilt month

    moved = increment([reextract.format(value="PAP_R", cons_no="'9999999999'", n=2)])
    assert moved == {model: 0 for model in models}
    assert rebuilt_share() == 1.0

    # The forgotten customer known again (rebuilt whole), while a late re-extract of the first
    # day of the readings rebuilds another customer from the first month: none of its days
    # lie before that month, so none are read apart (at 100k, a scan of 69 M days).
    first_day = "(select min(DATA_DATE) from raw.ami__daily_reading)"
    known_again = increment(
        [
            "insert into marts.dim_customer select * from held.forgotten",
            "insert into raw.ami__daily_reading select * replace (PAP_R - 0.25 as PAP_R, "
            "'ami/daily_reading/daily_reading_299912313.parquet' as _source_file, "
            f"{later} + interval 3 hour as _loaded_at) from raw.ami__daily_reading "
            f"where DATA_DATE = {first_day} order by METER_ID, _source_file desc limit 1",
        ]
    )
    assert known_again == {model: 0 for model in models}
    assert forgotten in {c for c, *_ in usage()}
    assert not read_whole_apart[-1]


def test_whole_builds_lay_the_day_tables_out_month_by_month(built):
    # An incremental build skips a row group of these tables by the min/max of its dates only
    # when its rows are a month's (macros/clustering.sql); built in series order, every row
    # group held every month.
    for table, day in (("int_meter_readings", "reading_date"), ("int_daily_energy", "energy_date")):
        months = built.sql(
            f"select date_trunc('month', {day}) as month from intermediate.{table} order by rowid"
        )["month"]
        assert months.n_unique() >= 12, table
        assert months.is_sorted(), f"{table} is not laid out month by month"

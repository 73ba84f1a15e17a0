import hashlib
import json
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from data_contracts import load_contracts
from simulator.archetypes import SEGMENTS
from simulator.cli import main, parse_args
from simulator.defects import FILE_DEFECTS, DefectRates
from tests.conftest import make_drop


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a = make_drop(tmp_path / "a", accounts=60, months=2, seed=3)
    b = make_drop(tmp_path / "b", accounts=60, months=2, seed=3)
    c = make_drop(tmp_path / "c", accounts=60, months=2, seed=4)
    assert _digest(a.landing) == _digest(b.landing)
    assert _digest(a.truth) == _digest(b.truth)
    assert _digest(a.landing) != _digest(c.landing)


def test_every_defect_is_injected_by_default(drop):
    assert all(getattr(DefectRates(), n) > 0 for n in DefectRates.names())  # the defaults
    injected = {f["defect"] for f in drop.defects["files"]}
    assert injected == set(FILE_DEFECTS)
    rows = drop.defects["rows"]
    for kind in (
        "meter_change",
        "missing_day",
        "correction_bill",
        "reversal",
        "cons_no_hb",
        "compact_pay_time",
        "utc_z",
        "order_disorder",
        "tou_mismatch",
        "spike",
        "rollover",
    ):
        assert rows.get(kind, 0) > 0, kind
    assert any(k.startswith("duplicate_row:") for k in rows)
    assert any(k.startswith("orphan:") for k in rows)


def test_every_extract_is_written_with_a_marker_in_its_format(drop):
    contracts = load_contracts()
    broken = {f["path"] for f in drop.defects["files"] if f["defect"] != "extra_column"}
    for name, c in contracts.items():
        files = sorted((drop.landing / c.folder).glob(f"*.{c.extension}"))
        assert len(files) >= 3, name
        for f in files:
            rel = str(f.relative_to(drop.landing))
            if rel in broken:
                continue
            marker = json.loads(Path(f"{f}.ok").read_text())
            assert marker["sha256"] == hashlib.sha256(f.read_bytes()).hexdigest()
            assert set(marker) == {"rows", "sha256", "extracted_at", "period"}
            if c.file_format == "csv":
                text = f.read_bytes().decode(c.encoding)
                header = text.splitlines()[0].split(c.delimiter)
                assert header[: len(c.column_names)] == list(c.column_names)
                assert marker["rows"] == len(
                    pl.read_csv(
                        f.read_bytes().decode(c.encoding).encode(),
                        separator=c.delimiter,
                        infer_schema=False,
                    )
                )


def test_source_quirks_are_as_the_interface_says(drop):
    archive = next((drop.landing / "mkt/cons_archive").glob("*.csv")).read_bytes()
    assert b"\r\n" in archive
    fin = next((drop.landing / "fin/payment").glob("*.csv")).read_bytes()
    assert fin.startswith(b"\xef\xbb\xbf") and b"|" in fin.splitlines()[0]
    payments = pl.read_csv(fin[3:], separator="|", infer_schema=False)
    assert payments["PAY_AMT"].str.contains(r"^-?\d+$").all()  # integer fen
    assert (payments["CONS_NO"].str.len_chars() < 10).any()  # leading zeros dropped
    orders = [
        json.loads(line)
        for f in (drop.landing / "crm/work_order").glob("*.jsonl")
        for line in f.read_text().splitlines()
    ]
    assert max(o["version"] for o in orders if isinstance(o["version"], int)) >= 3
    assert any(str(o["accept_time"]).endswith("Z") for o in orders)
    assert any(str(o["cons_no"]).startswith("HB") for o in orders)


def test_truth_is_kept_apart_and_complete(drop):
    truth = pl.read_parquet(drop.truth / "accounts.parquet")
    assert not list(drop.landing.rglob("accounts.parquet"))
    assert len(truth) == 150
    assert set(truth["segment"]) <= set(SEGMENTS)
    assert truth["p_default_next_3m"].is_between(0, 1).all()
    assert {"archetype", "defaults_next_3m"} <= set(truth.columns)


def test_truth_cannot_go_inside_the_landing_zone(tmp_path):
    with pytest.raises(SystemExit):
        parse_args(["--out", str(tmp_path), "--truth", str(tmp_path / "truth")])


def test_an_unknown_defect_is_refused(tmp_path, capsys):
    code = main(
        ["--out", str(tmp_path / "o"), "--truth", str(tmp_path / "t"), "--defect", "gremlins=0.1"]
    )
    assert code == 2 and "gremlins" in capsys.readouterr().err


def test_identity_numbers_carry_a_valid_check_character():
    from simulator.population import _with_check_digit

    # The check character of the published GB 11643 example.
    assert _with_check_digit(["11010519491231002"]) == ["11010519491231002X"]
    assert _with_check_digit([]) == []


def test_load_curve_points_not_collected_are_null_not_nan(drop):
    damaged = {f["path"] for f in drop.defects["files"] if f["defect"] != "extra_column"}
    files = [
        f
        for f in sorted((drop.landing / "ami/load_curve").glob("*.parquet"))
        if str(f.relative_to(drop.landing)) not in damaged
    ]
    points = pl.concat([pl.read_parquet(f).select([f"P{i}" for i in range(1, 97)]) for f in files])
    assert points.null_count().sum_horizontal()[0] > 0
    assert not any(points[c].is_nan().any() for c in points.columns)


def test_a_tiny_drop_at_default_rates_still_carries_every_row_defect(tmp_path):
    # Default rates, all small: about 600 bills and a dozen work orders.
    tiny = make_drop(tmp_path, accounts=200, months=3, seed=5)
    logged = tiny.defects["rows"]
    for kind in (
        "meter_change",
        "spike",
        "missing_day",
        "tou_mismatch",
        "correction_bill",
        "reversal",
        "compact_pay_time",
        "cons_no_spaces:fin",
        "orphan:ami",
        "orphan:fin",
        "cons_no_hb",
        "cons_no_spaces:crm",
        "orphan:crm",
        "utc_z",
        "order_disorder",
        "duplicate_row:fin__payment",
        "bad_value:fin__payment",
        "late_duplicate:fin__payment",
    ):
        assert logged.get(kind, 0) >= 1, kind
    assert {f["defect"] for f in tiny.defects["files"]} == set(FILE_DEFECTS)


def test_broken_parquet_files_really_do_not_read(drop):
    import pyarrow.parquet as pq

    broken = drop.files_with("broken_parquet")
    assert broken
    for path in broken:
        with pytest.raises(Exception):  # noqa: B017 — any reader error will do
            pq.read_table(drop.landing / path)


def _months(accounts: int, months: int, rates: DefectRates, **blocks) -> tuple[list[dict], object]:
    """Each month's tables, straight from the generator (seed 5), and the simulation."""
    import numpy as np

    from simulator.calendar import month_range
    from simulator.generate import Simulation
    from simulator.population import build_population

    rng = np.random.default_rng(5)
    pop = build_population(accounts, months, rng)
    sim = Simulation(pop, month_range(202510, months), rng, rates, **blocks)
    return [dict(month.tables) for month in sim], sim


def test_readings_and_curves_built_in_blocks_are_those_built_whole():
    # Without defects a reading's registers follow from the energy alone, which is drawn before
    # the blocks: blocks of 7 accounts (3 with curves) must give every account its own
    # registers. The collection times and the curves' ±5 % noise are drawn block by block, so
    # they differ, and so does every draw after them: one month is compared.
    whole = _months(60, 2, DefectRates.none())[0][0]
    blocked = _months(60, 2, DefectRates.none(), account_block=7, curve_block=3)[0][0]
    key = ["METER_ID", "DATA_DATE"]
    a, b = (m["ami__daily_reading"].drop("COLL_TIME").sort(key) for m in (whole, blocked))
    assert a.height > 50 * 28  # every open account, every day
    assert a.equals(b)
    a, b = (
        m["ami__load_curve"]
        .select(*key, pl.sum_horizontal(pl.col(r"^P\d+$")).alias("kw"))
        .sort(key)
        for m in (whole, blocked)
    )
    assert a.height >= 3 * 31 and a.select(key).equals(b.select(key))
    # The noise of a day's 96 points, or of a month's, leaves their sums far closer than the
    # energies of two different accounts.
    assert ((a["kw"] - b["kw"]).abs() <= 0.1 * a["kw"]).all()
    a, b = (f.group_by("METER_ID").agg(pl.sum("kw")).sort("METER_ID") for f in (a, b))
    assert ((a["kw"] - b["kw"]).abs() <= 0.02 * a["kw"]).all()


def test_meter_changes_built_in_blocks_carry_the_energy_of_their_accounts():
    # Across a change the month's energy is what the old meter gained up to its final value
    # plus what the new one gained from its initial value: exact, and only if each block's
    # registers, changes and energy belong to the same accounts.
    rates = DefectRates.none().with_overrides({"meter_change": 0.3})
    (first, second), sim = _months(60, 2, rates, account_block=7, curve_block=3)
    energy = sim.monthly_energy().filter(pl.col("month") == 202510)
    readings = pl.concat([first["ami__daily_reading"], second["ami__daily_reading"]])
    changes = second["ami__meter_change"]
    compared = 0
    for change in changes.iter_rows(named=True):
        before = readings.filter(
            pl.col("METER_ID") == change["OLD_METER_ID"], pl.col("DATA_DATE") < date(2025, 10, 1)
        )
        if before.is_empty():
            continue  # an account opened this month: no register to start from
        compared += 1
        after = readings.filter(pl.col("METER_ID") == change["NEW_METER_ID"])
        gained = (
            change["OLD_FINAL_R"]
            - before.sort("DATA_DATE")["PAP_R"][-1]
            + after.sort("DATA_DATE")["PAP_R"][-1]
            - change["NEW_INIT_R"]
        )
        month = energy.filter(pl.col("cons_no") == change["CONS_NO"])["kwh"]
        assert gained == pytest.approx(month[0], abs=0.011), change
    assert compared >= 10

"""The golden drop: a handful of rows written by hand in the sources' own formats, and the
figures they must give, worked out by hand below each scenario and asserted exactly.

Two accounts in 江岸 (urban). Account 0000000001 has its meter replaced on 3 September 2025,
a bill for August corrected, a payment reversed and paid again, and a repair whose crew
arrived late. Account 0000000002 is the control: one meter, one bill, nothing odd.
"""

import io
import shutil
import subprocess
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import duckdb
import polars as pl
import pytest

from data_contracts import Contract, load_contracts
from orchestration.assets.warehouse import dbt_command
from tests.conftest import ingest_all
from tests.landing import marker, put, text_file

pytestmark = pytest.mark.slow
CONTRACTS = load_contracts()
C1, C2 = "0000000001", "0000000002"

ARCHIVE = [
    {
        "CONS_NO": C1, "CONS_NAME": "金桂花", "ELEC_TYPE_CODE": "100", "VOLT_CODE": "AC02202",
        "TRADE_CODE": "T00", "STATUS_CODE": "1", "CONTRACT_CAP": "8.00", "ORG_NO": "420102001",
        "TG_ID": "TG4201020001", "ADDR": "湖北省武汉市江岸区胜利街1号", "MOBILE": "138-0000-0001",
        "CERT_NO": "420102198001010011", "SPECIAL_FLAG": "0", "TOU_FLAG": "N",
        "BUILD_DATE": "20100101", "CANCEL_DATE": "",
    },
    {
        "CONS_NO": C2, "CONS_NAME": "武汉江岸示例商店", "ELEC_TYPE_CODE": "200",
        "VOLT_CODE": "AC03802", "TRADE_CODE": "F52", "STATUS_CODE": "1", "CONTRACT_CAP": "30.00",
        "ORG_NO": "420102001", "TG_ID": "TG4201020001", "ADDR": "湖北省武汉市江岸区中山大道2号",
        "MOBILE": "", "CERT_NO": "", "SPECIAL_FLAG": "0", "TOU_FLAG": "N",
        "BUILD_DATE": "00000000", "CANCEL_DATE": "",
    },
]  # fmt: skip

# Bills for August: the first file issues them, a later file corrects account 1's.
BILL = {"TIP_PQ": "0", "PEAK_PQ": "0", "FLAT_PQ": "0", "VALLEY_PQ": "0", "PRC_CODE": "R1"}
BILLS = [
    {**BILL, "CONS_NO": C1, "BILL_YM": "202508", "T_PQ": "300.00", "T_AMT": "180.00",
     "BILL_FLAG": "N", "REL_DATE": "2025-09-05", "DUE_DATE": "2025-09-25"},
    {**BILL, "CONS_NO": C2, "BILL_YM": "202508", "T_PQ": "100.00", "T_AMT": "60.00",
     "BILL_FLAG": "N", "REL_DATE": "2025-09-05", "DUE_DATE": "2025-09-25"},
]  # fmt: skip
CORRECTION = [
    {**BILL, "CONS_NO": C1, "BILL_YM": "202508", "T_PQ": "280.00", "T_AMT": "168.00",
     "BILL_FLAG": "C", "REL_DATE": "2025-09-15", "DUE_DATE": "2025-09-25"},
]  # fmt: skip

# Account 1 pays 100.00 (fen, leading zeros dropped), the payment is reversed half an hour
# later, then 168.00 is paid the next day; account 2 pays 60.00 late.
PAYMENTS = [
    {"PAY_SN": "P1", "CONS_NO": "1", "PAY_TIME": "2025/09/10 10:00:00", "PAY_AMT": "10000",
     "PAY_MODE": "03", "BILL_YM": "202508", "REV_FLAG": "0", "ORIG_PAY_SN": ""},
    {"PAY_SN": "P2", "CONS_NO": "1", "PAY_TIME": "20250910103000", "PAY_AMT": "-10000",
     "PAY_MODE": "03", "BILL_YM": "202508", "REV_FLAG": "1", "ORIG_PAY_SN": "P1"},
    {"PAY_SN": "P3", "CONS_NO": " 1 ", "PAY_TIME": "2025/09/11 09:00:00", "PAY_AMT": "16800",
     "PAY_MODE": "04", "BILL_YM": "202508", "REV_FLAG": "0", "ORIG_PAY_SN": ""},
    {"PAY_SN": "P4", "CONS_NO": "2", "PAY_TIME": "20250928150000", "PAY_AMT": "6000",
     "PAY_MODE": "01", "BILL_YM": "202508", "REV_FLAG": "0", "ORIG_PAY_SN": ""},
]  # fmt: skip


def _reading(meter: str, cons_no: str, day: int, register: float) -> dict:
    return {"METER_ID": meter, "CONS_NO": cons_no, "DATA_DATE": date(2025, 9, day),
            "PAP_R": register, "PAP_R1": None, "PAP_R2": None, "PAP_R3": None, "PAP_R4": None,
            "COLL_TIME": datetime(2025, 9, day + 1, 0, 15)}  # fmt: skip


# Meter M1 of account 1 is replaced on 3 September: its final register 1016.0, the new meter
# M2 starts at 0.5 and is first read that evening. Account 2's meter M3 runs throughout.
READINGS = [
    _reading("M1", C1, 1, 1000.0),
    _reading("M1", C1, 2, 1010.0),
    _reading("M2", C1, 3, 4.5),
    _reading("M2", C1, 4, 12.5),
    *(_reading("M3", C2, d, r) for d, r in [(1, 500.0), (2, 505.0), (3, 511.0), (4, 518.0)]),
]
CHANGES = [
    {"CONS_NO": C1, "OLD_METER_ID": "M1", "NEW_METER_ID": "M2", "CHANGE_DATE": date(2025, 9, 3),
     "OLD_FINAL_R": 1016.0, "NEW_INIT_R": 0.5},
]  # fmt: skip

# A repair for account 1 (typed with the HB prefix), accepted 10:00, a crew dispatched 10:05,
# on site at 03:00Z = 11:00 Beijing time, power back at 12:30: arrival 60 min against the
# urban target of 45 (breached), completion 150 min against 180 (met). Two versions; the
# latest is the truth.
ORDER = {"order_no": "W1", "cons_no": "HB0000000001", "channel": "95598",
         "order_type": "故障报修", "sub_type": "低压故障",
         "accept_time": "2025-09-05T10:00:00+08:00", "satisfaction": None,
         "content": "家里停电"}  # fmt: skip
ORDERS = [
    {**ORDER, "version": 1, "dispatch_time": None, "arrive_time": None, "finish_time": None,
     "status": "受理"},
    {**ORDER, "version": 2, "dispatch_time": "2025-09-05T10:05:00+08:00",
     "arrive_time": "2025-09-05T03:00:00Z", "finish_time": "2025-09-05T12:30:00+08:00",
     "status": "已办结", "satisfaction": "满意"},
]  # fmt: skip

POLARS_TYPES = {"VARCHAR": pl.String, "DATE": pl.Date, "DOUBLE": pl.Float64,
                "TIMESTAMP": pl.Datetime("us")}  # fmt: skip


def _data(contract: Contract, rows: list[dict]) -> bytes:
    """The rows in the extract's format, as source-extracts.md describes it."""
    if contract.file_format == "parquet":
        schema = {c.name: POLARS_TYPES[c.physical_type] for c in contract.columns}
        buf = io.BytesIO()
        pl.DataFrame(rows, schema=schema).write_parquet(buf)
        return buf.getvalue()
    names = list(contract.column_names)
    return text_file(contract, names, [[r[n] for n in names] for r in rows])


def _drop(landing: Path, name: str, day: str, period: str, rows: list[dict]) -> None:
    data = _data(CONTRACTS[name], rows)
    put(landing, CONTRACTS[name], day, data, marker(data, len(rows), period, day))


@pytest.fixture(scope="module")
def golden(tmp_path_factory: pytest.TempPathFactory) -> duckdb.DuckDBPyConnection:
    root = tmp_path_factory.mktemp("golden")
    landing = root / "landing"
    _drop(landing, "mkt__cons_archive", "20251001", "202509", ARCHIVE)
    _drop(landing, "mkt__monthly_bill", "20250905", "202508", BILLS)
    _drop(landing, "mkt__monthly_bill", "20250915", "202508", CORRECTION)
    _drop(landing, "ami__daily_reading", "20251001", "202509", READINGS)
    _drop(landing, "ami__meter_change", "20251001", "202509", CHANGES)
    _drop(landing, "fin__payment", "20251001", "202509", PAYMENTS)
    _drop(landing, "crm__work_order", "20251001", "202509", ORDERS)
    warehouse = root / "warehouse.duckdb"
    outcomes = ingest_all(landing, warehouse, root / "vault.duckdb")
    assert all(f.status == "loaded" for o in outcomes.values() for f in o.files)
    assert sum(o.rows_quarantined for o in outcomes.values()) == 0
    marts = "+fct_daily_energy +fct_monthly_bills +fct_payments +fct_service_levels"
    done = subprocess.run(
        [
            *dbt_command(warehouse, root / "target", "build", "--select", marts),
            *("--exclude-resource-type", "test", "unit_test"),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout[-3000:]
    con = duckdb.connect(str(warehouse), read_only=True)
    yield con
    con.close()
    shutil.rmtree(root / "target", ignore_errors=True)


def _rows(con: duckdb.DuckDBPyConnection, sql: str) -> list[tuple]:
    return con.execute(sql).fetchall()


def test_daily_energy_runs_through_the_meter_change(golden):
    # Account 1: 2 Sep 1010 − 1000 = 10. 3 Sep: old meter 1016 − 1010 = 6, plus new meter
    # 4.5 − 0.5 = 4: 10 from two meters. 4 Sep: 12.5 − 4.5 = 8. (1 Sep has no reading before.)
    # Account 2: 5, 6, 7.
    assert _rows(
        golden,
        """SELECT customer_id, energy_date, kwh, n_meters, has_meter_change, is_clean
           FROM marts.fct_daily_energy ORDER BY 1, 2""",
    ) == [
        (C1, date(2025, 9, 2), 10.0, 1, False, True),
        (C1, date(2025, 9, 3), 10.0, 2, True, True),
        (C1, date(2025, 9, 4), 8.0, 1, False, True),
        (C2, date(2025, 9, 2), 5.0, 1, False, True),
        (C2, date(2025, 9, 3), 6.0, 1, False, True),
        (C2, date(2025, 9, 4), 7.0, 1, False, True),
    ]


def test_a_reversal_cancels_its_payment_and_the_bill_counts_what_stays_paid(golden):
    # P1 cancelled by P2; P3 (168.00) settles the corrected bill; P4 pays account 2's late.
    assert _rows(
        golden,
        """SELECT payment_id, customer_id, amount_yuan, is_reversal, is_cancelled,
                  reversal_payment_id, reversed_payment_id
           FROM marts.fct_payments ORDER BY 1""",
    ) == [
        ("P1", C1, Decimal("100.00"), False, True, "P2", None),
        ("P2", C1, Decimal("-100.00"), True, False, None, "P1"),
        ("P3", C1, Decimal("168.00"), False, False, None, None),
        ("P4", C2, Decimal("60.00"), False, False, None, None),
    ]


def test_a_correction_bill_replaces_the_bill_it_corrects(golden):
    # Account 1's August bill is the correction: 280 kWh, 168.00, paid in full by P3 at
    # 09:00 on 11 Sep (14 days before the due date 25 Sep). Account 2 paid 3 days late.
    assert _rows(
        golden,
        """SELECT customer_id, bill_month, billed_kwh, amount_yuan, is_corrected, paid_yuan,
                  days_paid_after_due
           FROM marts.fct_monthly_bills ORDER BY 1""",
    ) == [
        (C1, date(2025, 8, 1), Decimal("280.00"), Decimal("168.00"), True, Decimal("168.00"), -14),
        (C2, date(2025, 8, 1), Decimal("100.00"), Decimal("60.00"), False, Decimal("60.00"), 3),
    ]


def test_a_late_crew_breaches_the_arrival_target_and_meets_the_completion_one(golden):
    assert _rows(
        golden,
        """SELECT work_order_id, customer_id, area_type, measure, target_minutes,
                  actual_minutes, sla_status
           FROM marts.fct_service_levels ORDER BY measure""",
    ) == [
        ("W1", C1, "urban", "arrival", 45, 60.0, "breached"),
        ("W1", C1, "urban", "completion", 180, 150.0, "met"),
    ]

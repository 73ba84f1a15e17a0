import shutil
from pathlib import Path

import duckdb
import polars as pl
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from data_contracts import load_contracts
from orchestration.ingest import landing as lz
from orchestration.ingest.loader import ensure_ops
from orchestration.ingest.readers import (
    UnreadableFile,
    _read_by_arrow,
    _read_csv_records,
    read_csv,
)
from orchestration.ingest.reconcile import ledger_problems, ledger_summary, unaccounted_files
from tests.conftest import PII_KEY, ingest_all
from tests.landing import marker, put

CONTRACTS = load_contracts()


def _scalar(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None):
    return con.execute(sql, params or []).fetchone()[0]


def _ledger(ing, path: str) -> tuple:
    with ing.connect() as con:
        return con.execute(
            "SELECT status, reason, rows_loaded, extra_columns, duplicate_of "
            "FROM ops.load_ledger WHERE source_file = ?",
            [path],
        ).fetchone()


def test_every_row_of_every_marked_file_is_accounted_for(ingested):
    with ingested.connect() as con:
        for c in CONTRACTS.values():
            assert ledger_problems(con, c) == [], c.name
            assert unaccounted_files(con, ingested.landing, c) == [], c.name
        unexplained = _scalar(
            con,
            "SELECT sum(marker_rows - rows_loaded - rows_quarantined) "
            "FROM ops.load_ledger WHERE status = 'loaded'",
        )
        loaded = _scalar(con, "SELECT count(*) FROM ops.load_ledger WHERE status = 'loaded'")
    assert unexplained == 0 and loaded > 20


@pytest.mark.parametrize(
    "defect, words",
    [
        ("marker_rows", "data rows, the marker says"),
        ("marker_checksum", "differs from the marker"),
        ("truncated", "differs from the marker"),
        ("bad_encoding", "are not valid gbk"),
        ("broken_parquet", "not a readable Parquet file"),
        ("missing_column", "required column(s)"),
    ],
)
def test_bad_files_are_rejected_whole_with_reason_and_moved_aside(ingested, defect, words):
    paths = ingested.drop.files_with(defect)
    assert paths, f"the drop has no {defect} file"
    for path in paths:
        status, reason, loaded, _extra, _dup = _ledger(ingested, path)
        assert status == "rejected" and words in reason and loaded == 0
        assert not (ingested.landing / path).exists()
        moved = ingested.landing / lz.REJECTED_DIR / path
        assert moved.exists() and words in Path(f"{moved}.reason.txt").read_text()
        with ingested.connect() as con:
            extract = CONTRACTS[path.split("/")[0] + "__" + path.split("/")[1]]
            n = _scalar(
                con, f"SELECT count(*) FROM {extract.raw_table} WHERE _source_file = ?", [path]
            )
        assert n == 0


def test_unmarked_files_are_left_unread_as_pending(ingested):
    for path in ingested.drop.files_with("unmarked"):
        status, reason, loaded, *_ = _ledger(ingested, path)
        assert (status, loaded) == ("pending", 0) and "marker" in reason
        assert (ingested.landing / path).exists()


def test_identical_re_extract_is_recorded_as_duplicate_not_loaded_again(ingested):
    pairs = [
        (f["path"], f["of"]) for f in ingested.drop.defects["files"] if f["defect"] == "reextract"
    ]
    assert pairs
    for again, original in pairs:
        first = _ledger(ingested, original)
        status, _reason, loaded, _extra, dup = _ledger(ingested, again)
        if first[0] == "loaded":
            assert (status, loaded, dup) == ("duplicate", 0, original)
        else:  # the original was rejected, so is its identical copy
            assert status == "rejected"


def test_extra_columns_are_tolerated_reported_and_kept(ingested):
    for path in ingested.drop.files_with("extra_column"):
        status, reason, loaded, extra, _ = _ledger(ingested, path)
        if status != "loaded":
            continue  # the same file may also carry a destructive defect
        assert extra == ["DATA_SRC_FLAG"] and loaded > 0 and "DATA_SRC_FLAG" in reason
        c = CONTRACTS["__".join(path.split("/")[:2])]
        with ingested.connect() as con:
            kept = _scalar(
                con,
                f"SELECT any_value(_extra->>'DATA_SRC_FLAG') FROM {c.raw_table} "
                "WHERE _source_file = ?",
                [path],
            )
        assert kept == "SRC-A"


def test_bad_values_are_quarantined_with_file_row_column_and_reason(ingested):
    expected = sum(
        v for k, v in ingested.drop.defects["rows"].items() if k.startswith("bad_value:")
    )
    with ingested.connect() as con:
        rows = con.execute(
            "SELECT source_file, row_number, line, column_name, reason, raw_record "
            "FROM ops.quarantine"
        ).fetchall()
    assert expected > 0
    # Bad values in files that were rejected whole are not row-quarantined.
    assert 0 < len(rows) <= expected
    for source_file, row_number, line, column, reason, record in rows:
        assert source_file and row_number >= 1 and column and column in reason
        assert record.startswith("{")
        # Text files name the line (a CSV record starts at least one line after its number,
        # below the header; a JSON line is its record); Parquet has rows only.
        if source_file.endswith(".csv"):
            assert line > row_number
        elif source_file.endswith(".jsonl"):
            assert line == row_number
        else:
            assert line is None


def test_source_quirks_are_loaded_not_quarantined(ingested):
    with ingested.connect() as con:
        hb = _scalar(con, "SELECT count(*) FROM raw.crm__work_order WHERE cons_no LIKE 'HB%'")
        short = _scalar(con, "SELECT count(*) FROM raw.fin__payment WHERE length(CONS_NO) < 10")
        reversal = _scalar(
            con,
            "SELECT count(*) FROM raw.fin__payment WHERE REV_FLAG = '1' "
            "AND PAY_AMT < 0 AND ORIG_PAY_SN IS NOT NULL",
        )
        corrections = _scalar(
            con, "SELECT count(*) FROM raw.mkt__monthly_bill WHERE BILL_FLAG = 'C'"
        )
        nulls = _scalar(con, "SELECT count(*) FROM raw.mkt__cons_archive WHERE CANCEL_DATE IS NULL")
        tokens = _scalar(
            con, "SELECT count(*) FROM raw.mkt__cons_archive WHERE CANCEL_DATE IN ('NULL', '\\N')"
        )
    assert hb > 0 and short > 0 and reversal > 0 and corrections > 0
    assert nulls > 0 and tokens == 0  # empty, NULL and \N all read as null


def test_duplicate_rows_are_kept_with_their_lineage(ingested):
    with ingested.connect() as con:
        dup = _scalar(
            con,
            """SELECT count(*) FROM (SELECT PAY_SN FROM raw.fin__payment
                             GROUP BY 1 HAVING count(*) > 1)""",
        )
        lineage = _scalar(
            con,
            "SELECT count(*) FROM raw.fin__payment WHERE _source_file IS NULL "
            "OR _row_number IS NULL OR _loaded_at IS NULL OR _period IS NULL",
        )
    assert dup > 0 and lineage == 0


def test_personal_data_never_reaches_the_warehouse(ingested, drop):
    names, values = [], set()
    c = CONTRACTS["mkt__cons_archive"]
    for f in sorted((drop.landing / c.folder).glob("*.csv")):
        try:
            frame = pl.read_csv(f.read_bytes().decode("gbk").encode(), infer_schema=False)
        except UnicodeDecodeError:
            continue
        for col in ("CONS_NAME", "ADDR", "MOBILE", "CERT_NO"):
            values |= {v.strip() for v in frame[col].drop_nulls() if len(v.strip()) >= 4}
        names = frame["CONS_NAME"].drop_nulls().to_list()
    assert len(values) > 300 and names
    with ingested.connect() as con:
        con.execute("CREATE TEMP TABLE pii(v VARCHAR)")
        con.executemany("INSERT INTO pii VALUES (?)", [[v] for v in values])
        columns = con.execute(
            """SELECT table_schema, table_name, column_name FROM information_schema.columns
               WHERE data_type IN ('VARCHAR', 'JSON') AND table_schema IN ('raw', 'ops')"""
        ).fetchall()
        leaks = {}
        for schema, table, column in columns:
            n = _scalar(
                con,
                f"SELECT count(*) FROM {schema}.{table} t WHERE EXISTS "
                f'(SELECT 1 FROM pii WHERE contains(CAST(t."{column}" AS VARCHAR), pii.v))',
            )
            if n:
                leaks[f"{schema}.{table}.{column}"] = n
        birth = con.execute(
            "SELECT count(BIRTH_YEAR), count(*) FILTER (HAS_MOBILE) FROM raw.mkt__cons_archive"
        ).fetchone()
    assert leaks == {}
    assert birth[0] > 0 and birth[1] > 0


def test_free_text_is_redacted_and_kept_in_the_vault(ingested):
    with ingested.connect() as con:
        left = _scalar(
            con,
            "SELECT count(*) FROM raw.crm__work_order WHERE "
            "regexp_matches(content, '1[3-9][0-9][ -]?[0-9]{4}[ -]?[0-9]{4}')",
        )
        masked = _scalar(
            con, "SELECT count(*) FROM raw.crm__work_order WHERE content LIKE '%已脱敏%'"
        )
    assert left == 0 and masked > 0


def test_the_vault_opens_only_with_its_key(ingested):
    from orchestration.ingest.pii import attach_vault

    con = duckdb.connect()
    with pytest.raises(duckdb.Error):
        con.execute(f"ATTACH '{ingested.vault}' AS v")
    with pytest.raises(duckdb.Error):
        attach_vault(con, ingested.vault, "not-the-key")
    con.close()
    con = duckdb.connect()
    attach_vault(con, ingested.vault, PII_KEY)
    assert _scalar(con, "SELECT count(DISTINCT cons_no) FROM vault.customer_pii") > 100
    assert _scalar(con, "SELECT count(*) FROM vault.pii_text") > 0


def test_a_second_run_loads_nothing_twice(ingested, tmp_path):
    root = tmp_path / "again"
    shutil.copytree(ingested.landing, root / "landing")
    shutil.copy(ingested.warehouse, root / "w.duckdb")
    shutil.copy(ingested.vault, root / "v.duckdb")
    outcomes = ingest_all(root / "landing", root / "w.duckdb", root / "v.duckdb")
    assert all(o.files == [] for o in outcomes.values())
    with duckdb.connect(str(root / "w.duckdb"), read_only=True) as a, ingested.connect() as b:
        q = "SELECT count(*) FROM raw.ami__daily_reading"
        assert a.execute(q).fetchone() == b.execute(q).fetchone()


def test_a_file_marked_later_is_loaded_then(ingested, tmp_path):
    root = tmp_path / "late"
    shutil.copytree(ingested.landing, root / "landing")
    shutil.copy(ingested.warehouse, root / "w.duckdb")
    shutil.copy(ingested.vault, root / "v.duckdb")
    path = ingested.drop.files_with("unmarked")[0]
    data = (root / "landing" / path).read_bytes()
    contract = CONTRACTS["__".join(path.split("/")[:2])]
    from orchestration.ingest.readers import read_file

    rows = read_file(root / "landing" / path, contract).records
    import hashlib
    import json

    Path(f"{root / 'landing' / path}.ok").write_text(
        json.dumps(
            {
                "rows": rows,
                "sha256": hashlib.sha256(data).hexdigest(),
                "extracted_at": "",
                "period": "202510",
            }
        )
    )
    ingest_all(root / "landing", root / "w.duckdb", root / "v.duckdb")
    with duckdb.connect(str(root / "w.duckdb"), read_only=True) as con:
        status, loaded = con.execute(
            "SELECT status, rows_loaded FROM ops.load_ledger WHERE source_file = ?", [path]
        ).fetchone()
        assert ledger_problems(con, contract) == []
    assert status == "loaded" and loaded > 0


# --- readers and markers on hand-made files ------------------------------------------------


def test_csv_records_with_the_wrong_field_count_are_bad_records_with_their_line(tmp_path):
    f = tmp_path / "outage_20250101.csv"
    f.write_text(
        "OUTAGE_ID,TG_ID,START_TIME,END_TIME,OUTAGE_TYPE,CAUSE\n"
        'T1,TG1,2025-01-01 00:00:00,,故障,"tree\nfell"\nT2,TG1\n'
    )
    parsed = read_csv(f, CONTRACTS["om__outage"])
    assert parsed.records == 2 and parsed.table.num_rows == 1
    assert parsed.bad[0].row_number == 2 and parsed.bad[0].line == 4
    assert "2 fields" in parsed.bad[0].reason


OUTAGE_HEADER = "OUTAGE_ID,TG_ID,START_TIME,END_TIME,OUTAGE_TYPE,CAUSE"


@pytest.mark.parametrize(
    "text",
    [
        f"{OUTAGE_HEADER}\nT1,TG1,2025-01-01 00:00:00,,故障, tree fell \nT2,TG2,x,y,z,\n",
        f"{OUTAGE_HEADER}\r\nT1,TG1,a,,b,c\r\nT2,,,,,\r\n",  # CRLF; a record of empty values
        f"{OUTAGE_HEADER}\nT1,TG1,a,b,c,d",  # no newline after the last record
        " OUTAGE_ID , TG_ID,START_TIME,END_TIME,OUTAGE_TYPE,CAUSE\n",  # padded header, no record
        f"\ufeff{OUTAGE_HEADER}\nT1,TG1,a,b,c,d\n",  # a BOM the contract's encoding kept
        # Quotes around whole fields on one line, as the archive's producers write them:
        f'{OUTAGE_HEADER}\nT1,TG1,a,,b,"tree"\n',
        f'{OUTAGE_HEADER}\r\n"T1",TG1,"a, b",,"",""\r\n',  # a delimiter inside; "" is null
        f'{OUTAGE_HEADER}\n"T1","\\N","NULL", x ,"故障, 树","s p"',  # null words; no last newline
    ],
)
def test_csv_arrow_can_read_is_read_by_arrow_exactly_as_record_by_record(text):
    contract = CONTRACTS["om__outage"]
    fast, slow = _read_by_arrow(text, contract), _read_csv_records(text, contract)
    assert fast is not None
    assert (fast.columns, fast.records, fast.bad) == (slow.columns, slow.records, slow.bad)
    assert fast.table.schema == slow.table.schema
    assert fast.table.to_pylist() == slow.table.to_pylist()


@pytest.mark.parametrize(
    "text",
    [
        f'{OUTAGE_HEADER}\nT1,TG1,a,,b,"tree\nfell"\n',  # quoted: a record may span lines
        f'{OUTAGE_HEADER}\nT1,TG1,a,,b,"tree ""oak"""\n',  # doubled quotes
        f'{OUTAGE_HEADER}\nT1,TG1,a,,b,a"tree"\n',  # a quote inside a field
        f'{OUTAGE_HEADER}\nT1,TG1,a,,b, "tree"\n',  # a space before the quote
        f'{OUTAGE_HEADER}\nT1,TG1,a,,"b" ,c\n',  # a space after it
        f'{OUTAGE_HEADER}\nT1,TG1,a,,b,5"\n',  # a lone quote
        f'{OUTAGE_HEADER}\nT1,TG1,a,,b,"cut',  # an unterminated one
        f'"OUTAGE_ID",{OUTAGE_HEADER.partition(",")[2]}\nT1,TG1,a,b,c,d\n',  # quotes in the header
        f"{OUTAGE_HEADER}\nT1,TG1,a,b,c,d\n\nT2,TG1,a,b,c,d\n",  # a blank line
        f"{OUTAGE_HEADER}\nT1,TG1\nT2,TG1,a,b,c,d\n",  # a short record
        f"{OUTAGE_HEADER}\nT1,TG1,a,b,c,d,e\n",  # a long one
        f"{OUTAGE_HEADER}\nT1,TG1,a,b\x00,c,d\n",  # NUL
        f"{OUTAGE_HEADER}\rT1,TG1,a,b,c,d\r",  # lone carriage returns
        OUTAGE_HEADER,  # a header and nothing else
        "OUTAGE_ID,OUTAGE_ID\nT1,T2\n",  # a repeated name
        f"{OUTAGE_HEADER}\nT1,TG1,a,b,c,{'x' * 200_000}\n",  # past Python's field size limit
    ],
)
def test_csv_arrow_cannot_read_as_python_would_is_left_to_python(text):
    assert _read_by_arrow(text, CONTRACTS["om__outage"]) is None


# Records of the header's width (a wrong width is refused before quoting matters), of fields
# that trip CSV parsers: quotes whole, doubled, stray or beside a space, a quoted
# delimiter or line break, null words quoted or not, a lone carriage return.
TRICKY_FIELD = st.sampled_from(
    [
        "a",
        "树",
        "",
        " x ",
        '"a"',
        '""',
        '"a,b"',
        '"a""b"',
        'a"b',
        ' "a"',
        '"a" ',
        '"a\nb"',
        "NULL",
        "\\N",
        '"NULL"',
        '"\\N"',
        '"',
        "\r",
    ]
)
TRICKY_LINE = st.tuples(
    st.lists(TRICKY_FIELD, min_size=3, max_size=3).map(",".join), st.sampled_from(["\n", "\r\n"])
).map("".join)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(lines=st.lists(TRICKY_LINE, max_size=5), cut_last_newline=st.booleans())
def test_csv_whatever_arrow_accepts_it_reads_as_python_does(lines, cut_last_newline):
    # Any file Arrow's path takes must give exactly Python's records (and Python must not
    # reject it); the rest is left to Python alone.
    body = "".join(lines)
    text = "A,B,C\r\n" + (body.rstrip("\r\n") if cut_last_newline else body)
    contract = CONTRACTS["om__outage"]
    fast = _read_by_arrow(text, contract)
    event("read by Arrow" if fast is not None else "left to Python")
    if fast is None:
        return
    slow = _read_csv_records(text, contract)
    assert (fast.columns, fast.records, fast.bad) == (slow.columns, slow.records, slow.bad)
    assert fast.table.to_pylist() == slow.table.to_pylist()


def test_a_gbk_file_without_quotes_reads_its_nulls_rows_and_lines(tmp_path):
    contract = CONTRACTS["mkt__monthly_bill"]
    header = ",".join(contract.column_names)
    width = len(contract.column_names)
    f = tmp_path / "monthly_bill_20250101.csv"
    f.write_bytes(
        (f"{header}\n" + ",".join(["0000000001", "电费"] + [""] * (width - 2)) + "\n").encode("gbk")
        + (",".join(["0000000002"] + ["1"] * (width - 1)) + "\n").encode("gbk")
    )
    parsed = read_csv(f, contract)
    rows = parsed.table.to_pylist()
    assert parsed.records == 2 and parsed.bad == []
    assert [r["_row_number"] for r in rows] == [1, 2] and [r["_line"] for r in rows] == [2, 3]
    assert rows[0][contract.column_names[1]] == "电费"
    assert rows[0][contract.column_names[2]] is None  # the contract's null value ""


def test_an_unterminated_quote_makes_the_file_unreadable(tmp_path):
    f = tmp_path / "outage_20250101.csv"
    f.write_text('OUTAGE_ID,TG_ID,START_TIME,END_TIME,OUTAGE_TYPE,CAUSE\nT1,TG1,x,,故障,"cut')
    with pytest.raises(UnreadableFile):
        read_csv(f, CONTRACTS["om__outage"])


@pytest.mark.parametrize(
    "marker, field",
    [
        ('{"rows": -1, "sha256": "' + "a" * 64 + '", "period": "202501"}', "rows"),
        ('{"rows": 1, "sha256": "xyz", "period": "202501"}', "sha256"),
        ('{"rows": 1, "sha256": "' + "a" * 64 + '", "period": "2025-01"}', "period"),
        ("not json", "JSON"),
    ],
)
def test_a_bad_marker_names_the_field(tmp_path, marker, field):
    f = tmp_path / "outage_20250101.csv"
    f.write_text("x")
    Path(f"{f}.ok").write_text(marker)
    file = lz.LandingFile(f, "om/outage/outage_20250101.csv", "20250101", 0)
    with pytest.raises(lz.MarkerError, match=field):
        lz.read_marker(file)


def test_defects_left_to_the_staging_layer_reach_raw_intact(ingested):
    """Ingestion keeps raw faithful: these defects are loaded as they came, for dbt to clean."""
    with ingested.connect() as con:
        found = {
            "meter_change": _scalar(con, "SELECT count(*) FROM raw.ami__meter_change"),
            "gap": _scalar(
                con,
                """SELECT count(*) FROM (SELECT DATA_DATE - lag(DATA_DATE)
                OVER (PARTITION BY METER_ID ORDER BY DATA_DATE) AS step
                FROM raw.ami__daily_reading) WHERE step > 1""",
            ),
            "spike_or_wrap": _scalar(
                con,
                """SELECT count(*) FROM (SELECT PAP_R - lag(PAP_R)
                OVER (PARTITION BY METER_ID ORDER BY DATA_DATE) AS step
                FROM raw.ami__daily_reading) WHERE step < 0""",
            ),
            "order_disorder": _scalar(
                con,
                """SELECT count(*) FROM raw.crm__work_order
                WHERE CAST(finish_time AS TIMESTAMPTZ) < CAST(accept_time AS TIMESTAMPTZ)""",
            ),
            "tou_mismatch": _scalar(
                con,
                """SELECT count(*) FROM raw.mkt__monthly_bill
                WHERE TIP_PQ + PEAK_PQ + FLAT_PQ + VALLEY_PQ > 0
                  AND abs(TIP_PQ + PEAK_PQ + FLAT_PQ + VALLEY_PQ - T_PQ) > 1""",
            ),
            "orphan_fin": _scalar(
                con,
                """SELECT count(*) FROM raw.fin__payment p WHERE NOT EXISTS
                (SELECT 1 FROM raw.mkt__cons_archive a
                 WHERE ltrim(a.CONS_NO, '0') = ltrim(trim(p.CONS_NO), '0'))""",
            ),
            "orphan_ami": _scalar(
                con,
                """SELECT count(*) FROM raw.ami__daily_reading r
                WHERE NOT EXISTS (SELECT 1 FROM raw.mkt__cons_archive a
                                  WHERE a.CONS_NO = r.CONS_NO)""",
            ),
            "z_and_offset": _scalar(
                con,
                """SELECT count(DISTINCT right(accept_time, 1))
                FROM raw.crm__work_order""",
            ),
        }
        quarantined = _scalar(
            con,
            """SELECT count(*) FROM ops.quarantine
            WHERE reason NOT LIKE '%#VALUE!%' AND reason NOT LIKE '%??%'""",
        )
    assert all(v > 0 for v in found.values()), found
    assert found["z_and_offset"] == 2  # 'Z' and '+08:00' both arrive
    assert quarantined == 0  # only the injected bad values are quarantined


def test_a_failure_before_the_ledger_row_leaves_no_rows_and_a_re_run_loads_once(
    ingested, tmp_path, monkeypatch
):
    # The raw rows and the file's ledger row commit together: a crash between them must not
    # leave rows that a re-run would load a second time.
    from orchestration.ingest import loader
    from orchestration.ingest.pii import attach_vault

    root = tmp_path / "fail"
    shutil.copytree(ingested.landing, root / "landing")
    warehouse, vault = root / "w.duckdb", root / "v.duckdb"
    contract = CONTRACTS["ami__daily_reading"]
    real_record = loader._record

    def failing_record(con, contract_, file, *, status, **kw):
        if status == "loaded":
            raise RuntimeError("killed while recording")
        return real_record(con, contract_, file, status=status, **kw)

    monkeypatch.setattr(loader, "_record", failing_record)
    con = duckdb.connect(str(warehouse))
    attach_vault(con, vault, PII_KEY)
    with pytest.raises(RuntimeError, match="killed while recording"):
        loader.ingest_extract(con, root / "landing", contract)
    assert _scalar(con, f"SELECT count(*) FROM {contract.raw_table}") == 0
    assert _scalar(con, "SELECT count(*) FROM ops.load_ledger WHERE status = 'loaded'") == 0
    monkeypatch.setattr(loader, "_record", real_record)
    outcome = loader.ingest_extract(con, root / "landing", contract)
    rows = _scalar(con, f"SELECT count(*) FROM {contract.raw_table}")
    keys = _scalar(
        con, f"SELECT count(DISTINCT (_source_file, _row_number)) FROM {contract.raw_table}"
    )
    con.close()
    assert rows == keys == outcome.rows_loaded > 0
    with ingested.connect() as reference:
        assert rows == _scalar(reference, f"SELECT count(*) FROM {contract.raw_table}")


def test_the_next_file_is_read_while_one_loads_and_outcomes_keep_file_order(tmp_path, monkeypatch):
    """Four payment files: a good one; one whose marker's checksum is wrong and whose quote never
    closes; a good one; one without a marker. The second is read while the first loads; the
    outcomes follow the files, and the bad file is rejected for its checksum, as when files were
    read one by one (its read error is never asked for)."""
    import threading

    from orchestration.ingest import loader
    from orchestration.ingest.pii import attach_vault
    from tests.landing import text_file

    contract = CONTRACTS["fin__payment"]
    header = [c.name for c in contract.columns]
    good, other = (text_file(contract, header, [[v] * len(header)] * 3) for v in "xy")
    broken = good + b'"never closed,\r\n'
    landing = tmp_path / "landing"
    paths = [
        put(landing, contract, "20251001", good, marker(good, 3, "202509", "20251001")),
        put(landing, contract, "20251002", broken, marker(good, 3, "202509", "20251002")),
        put(landing, contract, "20251003", other, marker(other, 3, "202509", "20251003")),
        put(landing, contract, "20251004", good, None),
    ]
    second_read = threading.Event()
    overlapped: list[bool] = []
    real_read, real_load = loader.read_file, loader._load_records

    def read(path, contract_):
        try:
            return real_read(path, contract_)
        finally:
            if path == paths[1]:
                second_read.set()

    def load(con, contract_, file, *args):
        if file.path == paths[0]:
            overlapped.append(second_read.wait(timeout=30))
        return real_load(con, contract_, file, *args)

    monkeypatch.setattr(loader, "read_file", read)
    monkeypatch.setattr(loader, "_load_records", load)
    con = duckdb.connect()
    attach_vault(con, tmp_path / "vault.duckdb", PII_KEY)
    outcome = loader.ingest_extract(con, landing, contract)
    con.close()
    assert overlapped == [True]
    assert [(Path(f.source_file).name, f.status) for f in outcome.files] == [
        ("payment_20251001.csv", "loaded"),
        ("payment_20251002.csv", "rejected"),
        ("payment_20251003.csv", "loaded"),
        ("payment_20251004.csv", "pending"),
    ]
    assert "differs from the marker" in outcome.files[1].reason


def test_quarantined_free_text_is_masked_like_raw(tmp_path):
    """A work order quarantined for a bad code, and a line that is not JSON, both carrying a
    phone number in their text: the quarantine keeps them masked, as raw would."""
    import json

    from orchestration.ingest.loader import ingest_extract
    from orchestration.ingest.pii import attach_vault

    contract = CONTRACTS["crm__work_order"]
    order = {
        "order_no": "W1", "version": 1, "cons_no": "0000000001", "channel": "95598",
        "order_type": "投诉", "sub_type": "x", "accept_time": "2025-09-05T10:00:00+08:00",
        "status": "受理", "satisfaction": "极好", "content": "联系电话 138-1234-5678",
    }  # fmt: skip
    data = (json.dumps(order, ensure_ascii=False) + '\n{"order_no": "W2", 13987654321\n').encode()
    put(tmp_path / "landing", contract, "20251001", data, marker(data, 2, "202509", "20251001"))
    con = duckdb.connect()
    attach_vault(con, tmp_path / "vault.duckdb", PII_KEY)
    outcome = ingest_extract(con, tmp_path / "landing", contract)
    records = [r for (r,) in con.execute("SELECT raw_record FROM ops.quarantine").fetchall()]
    con.close()
    assert outcome.rows_quarantined == 2
    assert all("[已脱敏]" in r for r in records), records
    assert not any("1234" in r or "13987654321" in r for r in records), records


def test_the_ledger_summary_counts_a_months_files_and_names_the_extracts_it_lacks():
    con = duckdb.connect()
    ensure_ops(con)
    names = list(CONTRACTS)
    rows = [(f"{n}/202501.csv", n, "202501", "loaded", 10, 1) for n in names]
    rows += [(f"{n}/202502.csv", n, "202502", "loaded", 5, 0) for n in names[2:]]
    # In the ledger but not loaded: the month still lacks these two.
    rows += [(f"{names[0]}/202502.csv", names[0], "202502", "rejected", 0, 0)]
    rows += [(f"{names[1]}/202502.csv", names[1], "202502", "pending", 0, 0)]
    # Another month's file and one whose marker names no month: not counted.
    rows += [(f"{names[1]}/202503.csv", names[1], "202503", "loaded", 7, 0)]
    rows += [(f"{names[1]}/x.csv", names[1], None, "pending", 0, 0)]
    for f, name, period, status, loaded, quarantined in rows:
        system, extract = name.split("__", 1)
        con.execute(
            "INSERT INTO ops.load_ledger (source_file, system, extract, period, status, "
            "rows_loaded, rows_quarantined) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [f, system, extract, period, status, loaded, quarantined],
        )
    summary = ledger_summary(con, list(CONTRACTS.values()), ["202501", "202502"])
    assert summary["files"] == {
        "loaded": 2 * len(names) - 2,
        "duplicate": 0,
        "rejected": 1,
        "pending": 1,
    }
    assert summary["rows_loaded"] == 10 * len(names) + 5 * (len(names) - 2)
    assert summary["rows_quarantined"] == len(names)
    assert summary["missing"] == {"202502": names[:2]}
    # A month nothing has arrived for lacks every extract.
    assert ledger_summary(con, list(CONTRACTS.values()), ["202504"])["missing"] == {"202504": names}


def test_the_vault_keeps_each_accounts_latest_values(tmp_path):
    """An account twice in one archive file: its last record's values, an empty one included,
    win. A month loaded after a later one does not overwrite what the later month holds."""
    from orchestration.ingest.loader import ingest_extract
    from orchestration.ingest.pii import attach_vault
    from tests.landing import text_file

    contract = CONTRACTS["mkt__cons_archive"]
    header = [c.name for c in contract.columns]
    values = "0000000001,董宁,100,AC02202,T00,1,14.0,420106004,TG42010600039,x,x,x,0,Y,20180316,"
    valid = dict(zip(header, values.split(","), strict=True))

    def archive(day: str, period: str, *mobiles: str) -> None:
        rows = [[{**valid, "MOBILE": m, "ADDR": f"{day} 路"}[h] for h in header] for m in mobiles]
        data = text_file(contract, header, rows)
        put(tmp_path / "landing", contract, day, data, marker(data, len(rows), period, day))

    con = duckdb.connect()
    attach_vault(con, tmp_path / "vault.duckdb", PII_KEY)

    def vault() -> dict[str, tuple[str | None, str]]:
        found = con.execute("SELECT column_name, value, period FROM vault.customer_pii").fetchall()
        return {name: (value, period) for name, value, period in found}

    archive("20250201", "202501", "13800000001", "13800000002")
    archive("20250401", "202503", "13800000003", "")
    outcomes = [f.status for f in ingest_extract(con, tmp_path / "landing", contract).files]
    assert outcomes == ["loaded", "loaded"], outcomes
    assert vault()["MOBILE"] == (None, "202503")  # the last record's empty value
    assert vault()["ADDR"] == ("20250401 路", "202503")
    archive("20250301", "202502", "13800000009")  # February, late
    ingest_extract(con, tmp_path / "landing", contract)
    assert vault()["MOBILE"] == (None, "202503")
    assert vault()["ADDR"] == ("20250401 路", "202503")
    con.close()

"""Read one landing file into columns of text, with every record accounted for.

A reader returns the records it could split into fields (as a pyarrow table of strings, or a
DuckDB-readable Parquet path) and the records it could not, each with its row number, line and
reason. A file that cannot be read at all (undecodable bytes, broken Parquet, unterminated quote)
raises :class:`UnreadableFile` with the place and the cause.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from data_contracts import Contract

ROW_NUMBER = "_row_number"
# Text formats: the line where each record starts, so a value check can name it.
LINE = "_line"


class UnreadableFile(ValueError):
    """The file as a whole cannot be read; it is rejected with this reason."""


@dataclass(frozen=True)
class BadRecord:
    row_number: int  # 1-based position among the file's data records
    line: int  # line of the file where the record starts
    reason: str
    raw: str


@dataclass
class Parsed:
    columns: list[str]  # source column names, in file order
    table: pa.Table | None = None  # text formats: strings, plus _row_number and _line
    parquet_path: Path | None = None  # Parquet: read in place by DuckDB
    records: int = 0  # data records found, good and bad
    bad: list[BadRecord] = field(default_factory=list)


def _decode(path: Path, data: bytes, encoding: str) -> str:
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise UnreadableFile(
            f"bytes {data[exc.start : exc.end]!r} at offset {exc.start} (line {line}) are not "
            f"valid {encoding}: the file is unreadable"
        ) from exc


def read_csv(path: Path, contract: Contract) -> Parsed:
    text = _decode(path, path.read_bytes(), contract.encoding or "utf-8")
    return _read_by_arrow(text, contract) or _read_csv_records(text, contract)


def _plainly_quoted(data: bytes, delimiter: str, quote: str) -> bool:
    """Whether every quote character in ``data`` (the text as UTF-8, with no lone carriage
    return) opens or closes a whole field on one line, with no quote inside (``,"a, b",``):
    the quoting that Arrow's parser and Python's read alike. A doubled quote, a quoted line
    break, or a quote inside a field or beside a space is not (Python's strict parser may even
    reject the file), and the file is left to Python. Found with array operations over the
    bytes (an ASCII character is never part of another's UTF-8 bytes): a file with every field
    quoted has millions of quotes, which a Python loop took longer over than Python's parser."""
    if not (len(delimiter) == len(quote) == 1 and (delimiter + quote).isascii()):
        return False
    b = np.frombuffer(data, dtype=np.uint8)
    quotes = np.flatnonzero(b == ord(quote))
    if len(quotes) % 2:
        return False
    # Paired in order, the first with the second: each pair must enclose a field on one line.
    opens, closes = quotes[0::2], quotes[1::2]
    newlines = np.flatnonzero(b == ord("\n"))
    if (np.searchsorted(newlines, opens) != np.searchsorted(newlines, closes)).any():
        return False
    before = b[np.maximum(opens - 1, 0)]
    after = b[np.minimum(closes + 1, len(b) - 1)]
    return bool(
        ((opens == 0) | (before == ord(delimiter)) | (before == ord("\n"))).all()
        and (
            (closes == len(b) - 1)
            | (after == ord(delimiter))
            | (after == ord("\r"))
            | (after == ord("\n"))
        ).all()
    )


def _read_by_arrow(text: str, contract: Contract) -> Parsed | None:
    """The file read by Arrow's CSV parser, when that is sure to give what ``_read_csv_records``
    gives; else None. Python's parser took 11.9 s of CPU for the 25 bill files of 100,000
    accounts (2.5 M records), on the core DuckDB's load of the file before needs.

    Sure means: quotes, if any, only around whole fields on one line (``_plainly_quoted``) and
    none in the header; no NUL, lone carriage return or blank line in the text; a header of two
    or more distinct names, every line a record of the header's width, and no field longer
    than Python's parser takes (a blank, short or long line is a bad record, which Python's
    parser reports with its line). Each record is then one line: the one after the header and
    the records before it."""
    delimiter, quote = contract.delimiter or ",", contract.quote or '"'
    if "\0" in text or text.count("\r") != text.count("\r\n"):
        return None
    if "\n\n" in text or "\n\r\n" in text:  # Arrow reads a blank line as a record of nulls
        return None
    end = text.find("\n")
    if end < 0:  # a header alone, or nothing
        return None
    data = text.encode("utf-8")
    quoted = quote in text
    if quoted and (quote in text[:end] or not _plainly_quoted(data, delimiter, quote)):
        return None
    header = [h.strip() for h in text[:end].removesuffix("\r").split(delimiter)]
    if len(header) < 2 or len(set(header)) != len(header):
        return None
    invalid: list[object] = []

    def refuse(row: object) -> str:
        invalid.append(row)
        return "skip"

    table = pa_csv.read_csv(
        pa.py_buffer(data),
        read_options=pa_csv.ReadOptions(column_names=header, skip_rows=1),
        parse_options=pa_csv.ParseOptions(
            delimiter=delimiter,
            quote_char=quote if quoted else False,
            newlines_in_values=False,
            ignore_empty_lines=False,
            invalid_row_handler=refuse,
        ),
        convert_options=pa_csv.ConvertOptions(
            column_types=dict.fromkeys(header, pa.string()),
            null_values=list(contract.null_values),
            # Python's reader drops the quotes, then compares with the null values.
            strings_can_be_null=True,
            quoted_strings_can_be_null=True,
        ),
    )
    longest = max((pc.max(pc.utf8_length(c)).as_py() or 0 for c in table.columns), default=0)
    if invalid or longest > csv.field_size_limit():  # Python's parser refuses such a field
        return None
    records = table.num_rows
    numbers = np.arange(1, records + 2, dtype=np.int64)
    table = table.append_column(ROW_NUMBER, pa.array(numbers[:-1]))
    table = table.append_column(LINE, pa.array(numbers[1:]))
    return Parsed(columns=header, table=table, records=records)


def _read_csv_records(text: str, contract: Contract) -> Parsed:
    """Python's CSV parser, record by record: every quirk, and each bad record with its line."""
    nulls = set(contract.null_values)
    reader = csv.reader(
        io.StringIO(text, newline=""),
        delimiter=contract.delimiter or ",",
        quotechar=contract.quote or '"',
        strict=True,
    )
    try:
        header = next(reader)
    except StopIteration as exc:
        raise UnreadableFile("the file is empty: no header row") from exc
    except csv.Error as exc:
        raise UnreadableFile(f"header row cannot be parsed: {exc}") from exc
    header = [h.strip() for h in header]
    if len(set(header)) != len(header):
        raise UnreadableFile(f"header repeats a column name: {header}")
    width = len(header)
    values: list[list[str | None]] = [[] for _ in range(width)]
    row_numbers: list[int] = []
    lines: list[int] = []
    bad: list[BadRecord] = []
    records = 0
    start_line = reader.line_num + 1
    try:
        for record in reader:
            records += 1
            if len(record) != width:
                bad.append(
                    BadRecord(
                        records,
                        start_line,
                        f"record has {len(record)} fields, the header has {width}",
                        (contract.delimiter or ",").join(record),
                    )
                )
            else:
                for i, v in enumerate(record):
                    values[i].append(None if v in nulls else v)
                row_numbers.append(records)
                lines.append(start_line)
            start_line = reader.line_num + 1
    except csv.Error as exc:
        raise UnreadableFile(f"line {reader.line_num}: {exc} (file truncated?)") from exc
    arrays = {h: pa.array(v, pa.string()) for h, v in zip(header, values, strict=True)}
    arrays[ROW_NUMBER] = pa.array(row_numbers, pa.int64())
    arrays[LINE] = pa.array(lines, pa.int64())
    return Parsed(columns=header, table=pa.table(arrays), records=records, bad=bad)


def read_jsonl(path: Path, contract: Contract) -> Parsed:
    text = _decode(path, path.read_bytes(), contract.encoding or "utf-8")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last record
    columns: list[str] = []
    seen: set[str] = set()
    rows: list[dict] = []
    row_numbers: list[int] = []
    bad: list[BadRecord] = []
    for n, line in enumerate(lines, start=1):
        try:
            doc = json.loads(line)
        except json.JSONDecodeError as exc:
            bad.append(BadRecord(n, n, f"not valid JSON: {exc.msg} at column {exc.colno}", line))
            continue
        if not isinstance(doc, dict):
            bad.append(BadRecord(n, n, "a JSON line must hold an object", line))
            continue
        for k in doc:
            if k not in seen:
                seen.add(k)
                columns.append(k)
        rows.append(doc)
        row_numbers.append(n)

    def text_of(v: object) -> str | None:
        if v is None:
            return None
        if isinstance(v, str):
            return v
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        return json.dumps(v, ensure_ascii=False)

    arrays = {c: pa.array([text_of(r.get(c)) for r in rows], pa.string()) for c in columns}
    arrays[ROW_NUMBER] = pa.array(row_numbers, pa.int64())
    arrays[LINE] = pa.array(row_numbers, pa.int64())  # one record per line
    return Parsed(columns=columns, table=pa.table(arrays), records=len(lines), bad=bad)


def read_parquet(path: Path, contract: Contract) -> Parsed:
    try:
        meta = pq.ParquetFile(path).metadata
        columns = [meta.schema.column(i).name for i in range(meta.num_columns)]
        records = meta.num_rows
    except (OSError, pa.ArrowException) as exc:
        raise UnreadableFile(f"not a readable Parquet file: {exc}") from exc
    return Parsed(columns=columns, parquet_path=path, records=records)


READERS = {"csv": read_csv, "jsonl": read_jsonl, "parquet": read_parquet}


def read_file(path: Path, contract: Contract) -> Parsed:
    return READERS[contract.file_format](path, contract)

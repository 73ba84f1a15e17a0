"""Personal data: the encrypted vault, the derivatives the warehouse keeps, and redaction.

Columns a contract marks ``pii: vault`` (names, addresses, phones, identity numbers) never reach
the warehouse: they go to a separate DuckDB database encrypted with ``PII_KEY``, keyed by the
account number, and the warehouse keeps only the derived, non-identifying columns the contract
lists. Columns marked ``pii: redact`` (free text) keep their text with phone and identity
numbers masked; the original goes to the vault.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import duckdb

from data_contracts import Column
from orchestration.ingest.rowchecks import ident

# Derivation rules a contract may name: SQL over the personal column ({col}) → (type, SQL).
DERIVATIONS: dict[str, tuple[str, str]] = {
    "has_value": ("BOOLEAN", "coalesce(trim(CAST({col} AS VARCHAR)) <> '', false)"),
    "birth_year_from_cert_no": (
        "INTEGER",
        "CASE WHEN regexp_full_match(trim({col}), '[0-9]{{6}}(19|20)[0-9]{{2}}[0-9]{{7}}[0-9Xx]') "
        "THEN CAST(substr(trim({col}), 7, 4) AS INTEGER) END",
    ),
    "cert_kind": (
        "VARCHAR",
        "CASE WHEN {col} IS NULL OR trim({col}) = '' THEN NULL "
        "WHEN regexp_full_match(trim({col}), '[0-9]{{17}}[0-9Xx]') THEN 'resident_id' "
        "WHEN length(trim({col})) = 18 AND contains({col}, '*') THEN 'masked_id' "
        "WHEN regexp_full_match(trim({col}), '[0-9A-Z]{{18}}') THEN 'credit_code' "
        "ELSE 'other' END",
    ),
}

# Mainland mobile numbers (with optional +86 and separators) and 18-character identity numbers.
MOBILE_RE = r"(\+?86[ -]?)?1[3-9][0-9][ -]?[0-9]{4}[ -]?[0-9]{4}"
ID_RE = r"[1-9][0-9]{5}(19|20)[0-9]{2}[0-9]{7}[0-9Xx]"
REDACTED = "[已脱敏]"


def derived_columns(columns: tuple[Column, ...]) -> list[tuple[str, str, str, str]]:
    """(name, type, SQL, source column) of every derived column the contract asks for."""
    out = []
    for col in columns:
        for d in col.derived:
            if d.rule not in DERIVATIONS:
                raise ValueError(
                    f"column {col.name}: unknown derivation rule {d.rule!r}; "
                    f"known: {sorted(DERIVATIONS)}"
                )
            dtype, template = DERIVATIONS[d.rule]
            out.append((d.name, dtype, template.format(col=ident(col.name)), col.name))
    return out


def redact_text(text: str) -> str:
    """The same masking in Python, for text that never passes through SQL (a record that
    could not be split into fields)."""
    return re.sub(MOBILE_RE, REDACTED, re.sub(ID_RE, REDACTED, text))


def redact_sql(col: str) -> str:
    """SQL masking phone and identity numbers in a text column."""
    c = ident(col)
    inner = f"regexp_replace({c}, '{ID_RE}', '{REDACTED}', 'g')"
    return f"regexp_replace({inner}, '{MOBILE_RE}', '{REDACTED}', 'g')"


def _httpfs_extension() -> str:
    """The httpfs extension shipped on PyPI: DuckDB needs it to write encrypted databases."""
    folder = resources.files("duckdb_extension_httpfs").joinpath("extensions")
    found = sorted(Path(str(folder)).glob("*/httpfs.duckdb_extension"))
    if not found:
        raise RuntimeError("duckdb-extension-httpfs is installed but holds no extension file")
    return str(found[-1])


VAULT_DDL = (
    """CREATE TABLE IF NOT EXISTS vault.customer_pii (
        cons_no VARCHAR, column_name VARCHAR, value VARCHAR, period VARCHAR,
        source_file VARCHAR, row_number BIGINT, PRIMARY KEY (cons_no, column_name))""",
    """CREATE TABLE IF NOT EXISTS vault.pii_text (
        source_file VARCHAR, row_number BIGINT, column_name VARCHAR, value VARCHAR,
        PRIMARY KEY (source_file, row_number, column_name))""",
    """CREATE TABLE IF NOT EXISTS vault.quarantined_records (
        source_file VARCHAR, row_number BIGINT, raw_record VARCHAR,
        PRIMARY KEY (source_file, row_number))""",
)


def attach_vault(con: duckdb.DuckDBPyConnection, path: Path, key: str) -> None:
    """Attach the vault as ``vault`` (created on first use), encrypted with ``key``."""
    if not key:
        raise ValueError("PII_KEY is empty: the vault cannot be opened without a key")
    path.parent.mkdir(parents=True, exist_ok=True)
    con.execute(f"LOAD '{_httpfs_extension()}'")
    con.execute(f"ATTACH {_quote(str(path))} AS vault (ENCRYPTION_KEY {_quote(key)})")
    for ddl in VAULT_DDL:
        con.execute(ddl)


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"

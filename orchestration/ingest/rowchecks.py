"""Row-level contract checks, written as DuckDB SQL from the contract.

Each check yields a reason (naming the column and the offending value) or NULL; a record with
any reason goes to quarantine, the others are cast to the contract's types and loaded.
"""

from __future__ import annotations

from data_contracts import Column, Contract

NUMERIC = {"DOUBLE", "FLOAT", "BIGINT", "INTEGER", "SMALLINT", "TINYINT", "HUGEINT", "UBIGINT"}


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _shown(col: str) -> str:
    # The offending value, shortened so a huge field does not flood the quarantine table.
    return f"left(CAST({col} AS VARCHAR), 60)"


def column_checks(column: Column, source_type: str = "VARCHAR") -> list[tuple[str, str]]:
    """(condition, reason) SQL pairs for one present column whose values come as
    ``source_type`` (text from CSV and JSON; Parquet's own types): the record breaks the check
    where the condition is true, and the reason names the column and the offending value."""
    c = ident(column.name)
    text = f"CAST({c} AS VARCHAR)"
    is_text = source_type == "VARCHAR"

    def reason(what: str) -> str:
        return f"{literal(column.name + ': ')} || {_shown(c)} || {literal(' ' + what)}"

    checks = []
    if column.required:
        # Only text can be blank; rendering every typed value as text to ask was the most
        # expensive check of a Parquet file.
        blank = f" OR trim({text}) = ''" if is_text else ""
        checks.append((f"{c} IS NULL{blank}", literal(column.name + ": required value missing")))
    if column.physical_type not in ("VARCHAR", source_type):
        checks.append(
            (
                f"{c} IS NOT NULL AND TRY_CAST({c} AS {column.physical_type}) IS NULL",
                reason(f"is not {column.physical_type}"),
            )
        )
    if column.enum:
        allowed = ", ".join(literal(v) for v in column.enum)
        checks.append(
            (f"{c} IS NOT NULL AND {text} NOT IN ({allowed})", reason("is not an allowed code"))
        )
    if column.pattern:
        checks.append(
            (
                f"{c} IS NOT NULL AND trim({text}) <> '' AND NOT "
                f"regexp_full_match({text}, {literal(column.pattern)})",
                reason(f"does not match {column.pattern}"),
            )
        )
    number = c if source_type in NUMERIC else f"TRY_CAST({c} AS DOUBLE)"
    for bound, op in ((column.minimum, "<"), (column.maximum, ">")):
        if bound is not None:
            checks.append(
                (f"{number} {op} {float(bound)!r}", reason(f"is out of range ({op} {bound})"))
            )
    return checks


def reasons_sql(contract: Contract, source_types: dict[str, str]) -> str:
    """A DuckDB list expression of the reasons a record breaks the contract (empty when none);
    ``source_types`` maps each column the file holds to the type its values come as."""
    checks = [
        chk
        for col in contract.columns
        if col.name in source_types
        for chk in column_checks(col, source_types[col.name])
    ]
    if not checks:
        return "[]::VARCHAR[]"
    # The list of reasons is built only for a record that breaks a check: building and
    # filtering a list of ~100 entries for every row of a load curve cost more than the load.
    broken = " OR ".join(f"({condition})" for condition, _ in checks)
    reasons = ", ".join(f"CASE WHEN {condition} THEN {why} END" for condition, why in checks)
    return (
        f"CASE WHEN {broken} THEN list_filter([{reasons}], x -> x IS NOT NULL) "
        "ELSE []::VARCHAR[] END"
    )


def typed_select(contract: Contract, present: set[str]) -> list[tuple[str, str]]:
    """(name, SQL) of the warehouse's columns cast to their types; personal columns excluded,
    NULL where the file lacks an optional column."""
    out = []
    for col in contract.columns:
        if col.pii == "vault":
            continue
        value = ident(col.name) if col.name in present else "NULL"
        out.append((col.name, f"CAST({value} AS {col.physical_type}) AS {ident(col.name)}"))
    return out

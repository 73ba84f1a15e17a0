"""Row-level contract checks, written as DuckDB SQL from the contract.

Each check yields a reason (naming the column and the offending value) or NULL; a record with
any reason goes to quarantine, the others are cast to the contract's types and loaded.
"""

from __future__ import annotations

from data_contracts import Column, Contract


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _shown(col: str) -> str:
    # The offending value, shortened so a huge field does not flood the quarantine table.
    return f"left(CAST({col} AS VARCHAR), 60)"


def column_checks(column: Column) -> list[str]:
    """SQL expressions, each a reason string or NULL, for one present column."""
    c = ident(column.name)
    text = f"CAST({c} AS VARCHAR)"

    def reason(condition: str, what: str) -> str:
        return (
            f"CASE WHEN {condition} THEN {literal(column.name + ': ')} || {_shown(c)} || "
            f"{literal(' ' + what)} END"
        )

    checks = []
    if column.required:
        checks.append(
            f"CASE WHEN {c} IS NULL OR trim({text}) = '' THEN "
            f"{literal(column.name + ': required value missing')} END"
        )
    if column.physical_type != "VARCHAR":
        checks.append(
            reason(
                f"{c} IS NOT NULL AND TRY_CAST({c} AS {column.physical_type}) IS NULL",
                f"is not {column.physical_type}",
            )
        )
    if column.enum:
        allowed = ", ".join(literal(v) for v in column.enum)
        checks.append(
            reason(f"{c} IS NOT NULL AND {text} NOT IN ({allowed})", "is not an allowed code")
        )
    if column.pattern:
        checks.append(
            reason(
                f"{c} IS NOT NULL AND trim({text}) <> '' AND NOT "
                f"regexp_full_match({text}, {literal(column.pattern)})",
                f"does not match {column.pattern}",
            )
        )
    for bound, op in ((column.minimum, "<"), (column.maximum, ">")):
        if bound is not None:
            checks.append(
                reason(
                    f"TRY_CAST({c} AS DOUBLE) {op} {float(bound)!r}",
                    f"is out of range ({op} {bound})",
                )
            )
    return checks


def reasons_sql(contract: Contract, present: set[str]) -> str:
    """A DuckDB list expression of the reasons a record breaks the contract (empty when none)."""
    checks = [chk for col in contract.columns if col.name in present for chk in column_checks(col)]
    if not checks:
        return "[]::VARCHAR[]"
    return f"list_filter([{', '.join(checks)}], x -> x IS NOT NULL)"


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

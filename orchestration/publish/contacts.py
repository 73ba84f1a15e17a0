"""Contact details for target lists, from the personal-data vault, audited.

A target list carries every contact field of the archive contract (``contactMask``); the fields
its channel needs (an SMS needs the mobile, a visit the name, phone and address) are written in
clear, the others masked, so a list handed to the wrong team reveals no more than it must. Every
value read from the vault is recorded in ``ops.contact_audit`` — who, which field, for which
campaign and run, in clear or masked — without the value itself.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import duckdb
import polars as pl

AUDIT_DDL = """
CREATE TABLE IF NOT EXISTS ops.contact_audit (
    resolved_at TIMESTAMP,
    dagster_run_id VARCHAR,
    campaign_code VARCHAR,
    as_of_month DATE,
    customer_id VARCHAR,
    field VARCHAR,
    disclosure VARCHAR,   -- clear: the channel needs it; masked: written masked
    found BOOLEAN,        -- the vault held a non-empty value
    output_file VARCHAR
)"""


def mask(value: str | None, kind: str) -> str | None:
    """All but a recognisable fragment hidden: 张** · 138****5678 · 湖北省武汉市江岸区****."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    if kind == "name":
        return value[0] + "*" * max(len(value) - 1, 1)
    if kind == "phone":
        digits = re.sub(r"\D", "", value)
        digits = digits[2:] if digits.startswith("86") and len(digits) == 13 else digits
        return f"{digits[:3]}****{digits[-4:]}" if len(digits) >= 7 else "****"
    if kind == "address":
        # Down to the district (the last 区/县 before the street), never the street or number.
        cut = value.rfind("区", 0, 12)
        cut = cut if cut >= 0 else value.rfind("县", 0, 12)
        return (value[: cut + 1] if cut >= 0 else "") + "****"
    raise ValueError(f"unknown mask {kind!r}")


def contact_column(field: str) -> str:
    return f"contact_{field.lower()}"


def resolve_contacts(
    vault: duckdb.DuckDBPyConnection,
    customer_ids: list[str],
    needed: list[str],
    masks: dict[str, str],
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Contact columns for ``customer_ids`` (clear for ``needed`` fields, masked for the rest of
    ``masks``) and one audit row per customer and field. ``vault`` has the vault attached as
    ``vault``."""
    ids = pl.DataFrame({"customer_id": customer_ids}, schema={"customer_id": pl.String})
    vault.register("wanted_ids", ids.to_arrow())
    try:
        values = vault.execute(
            """SELECT p.cons_no AS customer_id, p.column_name AS field, p.value
               FROM vault.customer_pii AS p
               JOIN wanted_ids AS w ON p.cons_no = w.customer_id
               WHERE p.column_name IN (SELECT unnest(?))""",
            [list(masks)],
        ).pl()
    finally:
        vault.unregister("wanted_ids")
    out = ids
    audit = []
    for field, kind in masks.items():
        found = values.filter(pl.col("field") == field).select("customer_id", "value")
        clear = field in needed
        shown = found.with_columns(
            pl.col("value")
            if clear
            else pl.col("value").map_elements(lambda v, k=kind: mask(v, k), return_dtype=pl.String)
        ).rename({"value": contact_column(field)})
        out = out.join(shown, on="customer_id", how="left")
        audit.append(
            out.select(
                "customer_id",
                pl.lit(field).alias("field"),
                pl.lit("clear" if clear else "masked").alias("disclosure"),
                pl.col(contact_column(field)).is_not_null().alias("found"),
            )
        )
    return out, pl.concat(audit) if audit else pl.DataFrame()


def write_audit(
    con: duckdb.DuckDBPyConnection,
    audit: pl.DataFrame,
    *,
    run_id: str,
    campaign: str,
    month: object,
    output_file: str,
) -> int:
    """Append the resolutions to ops.contact_audit; returns the rows written."""
    if audit.is_empty():
        return 0
    frame = audit.select(
        pl.lit(datetime.now(UTC).replace(tzinfo=None)).alias("resolved_at"),
        pl.lit(run_id).alias("dagster_run_id"),
        pl.lit(campaign).alias("campaign_code"),
        pl.lit(month).alias("as_of_month"),
        "customer_id",
        "field",
        "disclosure",
        "found",
        pl.lit(output_file).alias("output_file"),
    )
    con.execute("CREATE SCHEMA IF NOT EXISTS ops")
    con.execute(AUDIT_DDL)
    con.register("audit_rows", frame.to_arrow())
    try:
        con.execute("INSERT INTO ops.contact_audit BY NAME SELECT * FROM audit_rows")
    finally:
        con.unregister("audit_rows")
    return len(frame)

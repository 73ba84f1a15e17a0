"""The customer-month frames tags and campaigns are computed on, read from the warehouse.

One query joins the features with the models' outputs of the same month and the customer's
dimension attributes; the rules then see one row per customer and month.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import duckdb
import polars as pl

from orchestration.publish.rules import MODEL_FIELDS

# Columns the model outputs and the customer dimension add to the features, as SQL.
_EXTRA = {
    "segment_code": "s.segment_code",
    "segment_confidence": "s.confidence",
    "risk_grade": "r.risk_grade",
    "risk_probability": "r.risk_probability",
    "special_group": "d.special_group",
    "area_type": "d.area_type",
}
assert set(MODEL_FIELDS) <= set(_EXTRA)


def table_exists(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    return bool(
        con.execute(
            "SELECT count(*) FROM information_schema.tables "
            "WHERE table_schema = ? AND table_name = ?",
            [schema, table],
        ).fetchone()[0]
    )


def _customer_month_rows(con: duckdb.DuckDBPyConnection, fields: set[str], where: str) -> str:
    """The SQL of the customer-month rows with ``fields``, filtered by ``where`` (on ``f``, the
    features): the one place the features, the models' outputs and the dimension are joined."""
    feature_cols = {r[0] for r in con.execute("DESCRIBE marts.customer_features").fetchall()}
    unknown = fields - feature_cols - set(_EXTRA)
    if unknown:
        raise ValueError(f"unknown fields {sorted(unknown)}")
    select = ["f.customer_id", "f.as_of_month"]
    select += [f'f."{c}"' for c in sorted(fields & feature_cols - {"customer_id", "as_of_month"})]
    select += [f"{_EXTRA[c]} AS {c}" for c in sorted(fields - feature_cols)]
    return f"""SELECT {", ".join(select)}
            FROM marts.customer_features AS f
            LEFT JOIN ml.customer_segments AS s USING (customer_id, as_of_month)
            LEFT JOIN ml.risk_scores AS r USING (customer_id, as_of_month)
            LEFT JOIN marts.dim_customer AS d USING (customer_id)
            WHERE {where}"""


def customer_months(
    con: duckdb.DuckDBPyConnection,
    fields: set[str],
    month: date | None = None,
    through: date | None = None,
    months: Sequence[date] | None = None,
) -> pl.DataFrame:
    """customer_id, as_of_month and ``fields`` (features or model/dimension columns) for every
    customer-month (up to ``through``), or only ``month``'s, or only ``months``'. Model columns
    are null in months no model run scored."""
    where, params = "true", {}
    if month:
        where, params = "f.as_of_month = $month", {"month": month}
    if through:
        where, params = "f.as_of_month <= $through", {"through": through}
    if months is not None:
        where, params = "f.as_of_month IN (SELECT unnest($months::DATE[]))", {"months": months}
    rows = _customer_month_rows(con, fields, where)
    return con.execute(f"{rows} ORDER BY f.as_of_month, f.customer_id", params).pl()


def customer_month_fingerprints(
    con: duckdb.DuckDBPyConnection, fields: set[str], through: date
) -> dict[date, tuple[int, str]]:
    """Per as-of month up to ``through``: how many customer-months ``customer_months`` would
    return and a hash sum of their rows. Equal fingerprints, equal rows (but for a hash
    collision): what is computed from a month's rows alone need not be computed again."""
    rows = _customer_month_rows(con, fields, "f.as_of_month <= $through")
    found = con.execute(
        f"""SELECT as_of_month, count(*), sum(hash(__row))::VARCHAR
            FROM ({rows}) AS __row GROUP BY as_of_month""",
        {"through": through},
    ).fetchall()
    return {month: (n, checksum) for month, n, checksum in found}


def campaign_frame(
    con: duckdb.DuckDBPyConnection,
    fields: set[str],
    month: date,
    *,
    complaint_days: int,
    cooldown_months: int,
) -> pl.DataFrame:
    """The as-of month's customers with the campaign fields, their tags (a list), and the
    exclusion facts: a complaint within ``complaint_days`` before the month's end, a campaign
    contact within the ``cooldown_months`` before the month."""
    base = {"status_code", "district_code", "segment_code", "risk_grade"}
    frame = customer_months(con, fields | base, month)
    tags = con.execute(
        """SELECT customer_id, list(tag_code ORDER BY tag_code) AS tags
           FROM publish.customer_tags WHERE as_of_month = ? GROUP BY customer_id""",
        [month],
    ).pl()
    complainants = con.execute(
        """SELECT DISTINCT customer_id FROM marts.fct_work_orders
           WHERE order_type_en = 'complaint' AND customer_id IS NOT NULL
             AND accepted_at >= CAST(? AS DATE) + INTERVAL 1 MONTH - to_days(CAST(? AS INTEGER))
             AND accepted_at < CAST(? AS DATE) + INTERVAL 1 MONTH""",
        [month, complaint_days, month],
    ).pl()
    contacted = pl.DataFrame(schema={"customer_id": pl.String})
    if cooldown_months and table_exists(con, "publish", "campaign_targets"):
        contacted = con.execute(
            """SELECT DISTINCT customer_id FROM publish.campaign_targets
               WHERE as_of_month < CAST(? AS DATE)
                 AND as_of_month >= CAST(? AS DATE) - to_months(CAST(? AS INTEGER))""",
            [month, month, cooldown_months],
        ).pl()
    return (
        frame.join(tags, on="customer_id", how="left")
        .with_columns(pl.col("tags").fill_null(pl.lit([], pl.List(pl.String))))
        .with_columns(
            pl.col("customer_id")
            .is_in(complainants["customer_id"].to_list())
            .alias("has_recent_complaint"),
            pl.col("customer_id")
            .is_in(contacted["customer_id"].to_list())
            .alias("was_recently_contacted"),
        )
    )

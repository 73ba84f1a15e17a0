"""``PUBLISH_DIR/report.html``: one self-contained page for management.

Segment sizes and profiles, KPI trends, service-level compliance and campaign sizes, each a
chart (inline SVG) with its table; no external file, script or font, so it can be mailed or
opened offline. Written beside and moved into place whole.
"""

from __future__ import annotations

import html
import io
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import polars as pl

from orchestration.publish.files import replaced

REPORT_NAME = "report.html"
_COLOURS = ["#1f6f8b", "#e0a100", "#7b9e3e", "#c0392b", "#8e5ea2", "#5d6d7e", "#16a085"]


@dataclass(frozen=True)
class ReportResult:
    path: Path
    charts: int
    as_of_month: str


def _svg(fig) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg") :]  # drop the XML prologue and doctype: inline in HTML


def _table(frame: pl.DataFrame, formats: dict[str, str] | None = None) -> str:
    formats = formats or {}
    head = "".join(f"<th>{html.escape(c)}</th>" for c in frame.columns)
    rows = []
    for row in frame.iter_rows(named=True):
        cells = []
        for c, v in row.items():
            text = "—" if v is None else format(v, formats[c]) if c in formats else str(v)
            cells.append(f"<td>{html.escape(text)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _segment_section(con: duckdb.DuckDBPyConnection, month) -> tuple[str, str]:
    profile = con.execute(
        """SELECT s.segment_code AS segment, count(*) AS customers,
                  count(*) / sum(count(*)) OVER () AS share,
                  median(f.kwh_avg_day_12m) AS kwh_per_day,
                  median(f.bill_yuan_avg_12m) AS bill_yuan_month,
                  avg(f.peak_share_12m) AS peak_share,
                  avg(f.valley_share_12m) AS valley_share,
                  avg(f.online_pay_share_12m) AS online_pay_share,
                  avg(f.late_bills_12m) AS late_bills_12m,
                  avg(r.risk_probability) AS risk_probability
           FROM ml.customer_segments AS s
           JOIN marts.customer_features AS f USING (customer_id, as_of_month)
           LEFT JOIN ml.risk_scores AS r USING (customer_id, as_of_month)
           WHERE s.as_of_month = ?
           GROUP BY 1 ORDER BY customers DESC""",
        [month],
    ).pl()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
    axes[0].barh(profile["segment"], profile["customers"], color=_COLOURS[0])
    axes[0].invert_yaxis()
    axes[0].set_title("Customers per segment")
    for y, n in enumerate(profile["customers"]):
        axes[0].text(n, y, f" {n:,}", va="center", fontsize=8)
    shares = profile.select("peak_share", "valley_share", "online_pay_share").to_numpy()
    width = 0.27
    for i, (name, colour) in enumerate(
        zip(("peak share", "valley share", "online payment share"), _COLOURS[1:], strict=False)
    ):
        axes[1].bar(
            [x + (i - 1) * width for x in range(len(profile))],
            shares[:, i],
            width,
            label=name,
            color=colour,
        )
    axes[1].set_xticks(range(len(profile)), profile["segment"], rotation=20, fontsize=8)
    axes[1].set_title("Segment profiles (means)")
    axes[1].legend(fontsize=7)
    formats = {
        "share": ".1%",
        "kwh_per_day": ",.1f",
        "bill_yuan_month": ",.0f",
        "peak_share": ".1%",
        "valley_share": ".1%",
        "online_pay_share": ".1%",
        "late_bills_12m": ".2f",
        "risk_probability": ".1%",
    }
    return _svg(fig), _table(profile, formats)


def _kpi_section(con: duckdb.DuckDBPyConnection, month: date) -> tuple[str, str]:
    kpi = con.execute(
        """SELECT * FROM publish.kpi_monthly
           WHERE segment_code <> 'unsegmented' AND month <= ? ORDER BY month""",
        [month],
    ).pl()
    fig, axes = plt.subplots(2, 2, figsize=(11, 6), sharex=True)
    kpi = kpi.with_columns(
        (pl.col("kwh") / pl.col("customers")).alias("kwh_per_customer"),
        (pl.col("revenue_yuan") / pl.col("customers")).alias("revenue_per_customer"),
    )
    panels = [
        ("kwh_per_customer", "Energy per customer (kWh, log scale)", True),
        ("revenue_per_customer", "Revenue per customer (yuan, log scale)", True),
        ("complaints_per_1000", "Complaints per 1,000 customers", False),
        ("arrears_rate", "Share of customers in arrears", False),
    ]
    for ax, (column, title, log) in zip(axes.flat, panels, strict=True):
        for colour, (segment, rows) in zip(
            _COLOURS, kpi.group_by("segment_code", maintain_order=True), strict=False
        ):
            ax.plot(rows["month"], rows[column], label=segment[0], color=colour, lw=1.5)
        ax.set_title(title, fontsize=10)
        if log:
            ax.set_yscale("log")
    axes[0][0].legend(fontsize=7)
    fig.autofmt_xdate()
    latest = kpi.filter(pl.col("month") == kpi["month"].max()).select(
        "segment_code",
        "customers",
        "kwh",
        "revenue_yuan",
        "revenue_growth_mom",
        "revenue_growth_yoy",
        "complaints_per_1000",
        "satisfaction_avg",
        "arrears_rate",
        "customers_changed_segment",
    )
    formats = {
        "kwh": ",.0f",
        "revenue_yuan": ",.0f",
        "revenue_growth_mom": "+.1%",
        "revenue_growth_yoy": "+.1%",
        "complaints_per_1000": ".2f",
        "satisfaction_avg": ".2f",
        "arrears_rate": ".1%",
    }
    return _svg(fig), _table(latest, formats)


def _sla_section(con: duckdb.DuckDBPyConnection, month: date) -> tuple[str, str]:
    monthly = con.execute(
        """SELECT month, order_type_en || ' · ' || measure AS target,
                  sum(met) / nullif(sum(met + breached), 0) AS compliance
           FROM publish.sla_compliance WHERE month <= ? GROUP BY 1, 2 ORDER BY 1""",
        [month],
    ).pl()
    by_segment = con.execute(
        """SELECT segment_code AS segment, order_type_en || ' · ' || measure AS target,
                  sum(orders) AS orders, sum(met) AS met, sum(breached) AS breached,
                  sum(open) AS open, sum(unmeasured) AS unmeasured,
                  sum(met) / nullif(sum(met + breached), 0) AS compliance
           FROM publish.sla_compliance
           WHERE month > CAST(? AS DATE) - INTERVAL 12 MONTH AND month <= ?
           GROUP BY 1, 2 ORDER BY 1, 2""",
        [month, month],
    ).pl()
    fig, ax = plt.subplots(figsize=(11, 3.4))
    for colour, (target, rows) in zip(
        _COLOURS, monthly.group_by("target", maintain_order=True), strict=False
    ):
        ax.plot(rows["month"], rows["compliance"], marker="o", ms=3, label=target[0], color=colour)
    ax.set_ylim(0, 1.05)
    ax.set_title("Service-level compliance by month (met / measured)")
    ax.legend(fontsize=7, loc="lower left")
    fig.autofmt_xdate()
    return _svg(fig), _table(by_segment, {"compliance": ".1%"})


def _campaign_section(con: duckdb.DuckDBPyConnection, month) -> tuple[str, str]:
    runs = con.execute(
        """SELECT campaign_code AS campaign, name_zh, channel, eligible, after_exclusions,
                  over_capacity, targets
           FROM publish.campaign_runs WHERE as_of_month = ? ORDER BY campaign_code""",
        [month],
    ).pl()
    fig, ax = plt.subplots(figsize=(11, 3.2))
    y = range(len(runs))
    ax.barh(y, runs["eligible"], color="#d5dde5", label="eligible")
    ax.barh(y, runs["after_exclusions"], color=_COLOURS[1], label="after exclusions")
    ax.barh(y, runs["targets"], color=_COLOURS[0], label="targets (within capacity)")
    ax.set_yticks(list(y), runs["campaign"], fontsize=8)
    ax.invert_yaxis()
    ax.set_title(f"Campaign sizes, {month:%Y-%m}")
    ax.legend(fontsize=7)
    return _svg(fig), _table(runs)


_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI","Noto Sans CJK SC","Microsoft YaHei",sans-serif;
margin:2rem auto;max-width:1200px;color:#1d2733;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{margin-top:2.2rem;border-bottom:2px solid #1f6f8b}
.meta{color:#5d6d7e}.chart svg{width:100%;height:auto}
table{border-collapse:collapse;font-size:.85rem;margin:.6rem 0}
th,td{border:1px solid #d5dde5;padding:.25rem .5rem;text-align:right}
th{background:#eef3f7}td:first-child,th:first-child{text-align:left}
.note{font-size:.85rem;color:#5d6d7e}
"""


def write_report(con: duckdb.DuckDBPyConnection, publish_dir: Path, month: date) -> ReportResult:
    """Render the report as of ``month`` from the warehouse (read-only) into ``publish_dir``."""
    customers = con.execute(
        "SELECT count(*) FROM ml.customer_segments WHERE as_of_month = ?", [month]
    ).fetchone()[0]
    sections = [
        (
            "segments",
            "客户分群 · Segments",
            *_segment_section(con, month),
            "Customers per business segment for the latest scored month, and each segment's "
            "profile: medians of use and bill, means of shares, late bills and payment risk.",
        ),
        (
            "kpi",
            "经营指标 · KPI trends",
            *_kpi_section(con, month),
            "Monthly KPIs by segment. Months before the first model run carry that run's segment "
            "back (publish.customer_segment_months), so early months show today's segments.",
        ),
        (
            "sla",
            "服务时限 · Service levels",
            *_sla_section(con, month),
            "Compliance with the service-level targets (dbt_project/seeds/sla_targets.csv); the "
            "table covers the last 12 months. Open orders within target and orders that cannot be "
            "measured are listed, not counted.",
        ),
        (
            "campaigns",
            "营销活动 · Campaigns",
            *_campaign_section(con, month),
            "Eligible customers, those left after the exclusions, and the targets within capacity "
            "(business_rules/campaigns.yaml).",
        ),
    ]
    body = "".join(
        f'<section id="{sid}"><h2>{html.escape(title)}</h2><p class="note">{html.escape(note)}'
        f'</p><div class="chart">{svg}</div>{table}</section>'
        for sid, title, svg, table, note in sections
    )
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    page = (
        '<!DOCTYPE html><html lang="zh-CN"><head><meta charset="utf-8">'
        f"<title>finegrid report {month:%Y-%m}</title><style>{_STYLE}</style></head><body>"
        f"<h1>finegrid · 客户细分与服务报告 {month:%Y-%m}</h1>"
        f'<p class="meta">{customers:,} segmented customers · generated {generated}</p>'
        f"{body}</body></html>"
    )
    path = publish_dir / REPORT_NAME
    with replaced(path) as tmp:
        tmp.write_text(page, "utf-8")
    return ReportResult(path, len(sections), f"{month:%Y-%m}")

"""Campaign target lists from the campaign rules (``business_rules/campaigns.yaml``).

For one as-of month: the eligible customers, minus the exclusions, ranked by the campaign's
score, cut to its capacity per district, per account manager or in total. Every step's count is
kept (the funnel), so a short list can be explained.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import polars as pl

from ml.mapping import ReasonFormatter, condition
from orchestration.publish.files import replaced

# The columns of a target list (publish.campaign_targets) with the Chinese headers the CSV files
# carry for service staff.
TARGET_LABELS = {
    "campaign_code": "活动编号",
    "as_of_month": "月份",
    "run_id": "批次",
    "customer_id": "户号",
    "rank": "排名",
    "score": "得分",
    "reason": "入选原因",
    "channel": "触达渠道",
    "district_code": "区县代码",
    "segment_code": "客户分群",
    "account_manager_id": "客户经理",
}


@dataclass
class CampaignResult:
    code: str
    targets: pl.DataFrame
    funnel: dict[str, int] = field(default_factory=dict)


def exclusion_flags(rules: dict) -> dict[str, pl.Expr]:
    """Each exclusion of the fixed set as a test on the campaign frame (true: excluded)."""
    return {
        "closed_or_suspended": pl.col("status_code").is_in(["2", "9"]).fill_null(True),
        "recent_complaint": pl.col("has_recent_complaint").fill_null(False),
        "high_risk": pl.col("risk_grade").is_in(rules["high_risk_grades"]).fill_null(False),
        "recently_contacted": pl.col("was_recently_contacted").fill_null(False),
    }


def eligibility(campaign: dict) -> pl.Expr:
    rules = campaign["eligibility"]
    expr = condition(rules.get("when", []))
    if segments := rules.get("segments"):
        expr = expr & pl.col("segment_code").is_in(segments).fill_null(False)
    for tag in rules.get("tags_all", []):
        expr = expr & pl.col("tags").list.contains(tag)
    if any_of := rules.get("tags_any"):
        expr = expr & pl.any_horizontal(pl.col("tags").list.contains(t) for t in any_of)
    for tag in rules.get("tags_none", []):
        expr = expr & ~pl.col("tags").list.contains(tag)
    return expr


def score(frame: pl.DataFrame, parts: list[dict]) -> pl.Series:
    """Weighted mean of each field's percentile rank among ``frame`` (0–1); a negative weight
    prefers low values; a missing value ranks lowest."""
    total = sum(abs(p["weight"]) for p in parts)
    n = max(len(frame), 1)
    expr = pl.lit(0.0)
    for p in parts:
        pct = pl.col(p["field"]).cast(pl.Float64).rank("average") / n
        if p["weight"] < 0:
            pct = 1.0 - pct
        expr = expr + abs(p["weight"]) * pct.fill_null(0.0)
    return frame.select((expr / total).round(6).alias("score")).to_series()


def select_targets(
    customers: pl.DataFrame, campaign: dict, rules: dict, month: date, run_id: str
) -> CampaignResult:
    """``customers``: the as-of month's campaign frame — the fields, a ``tags`` list,
    status_code, district_code, account_manager_id, has_recent_complaint and
    was_recently_contacted."""
    funnel = {"customers": len(customers)}
    eligible = customers.filter(eligibility(campaign))
    funnel["eligible"] = len(eligible)
    flags = exclusion_flags(rules)
    # A customer excluded for several reasons counts under the first, in the rule file's order.
    for name in campaign["exclusions"]:
        hit = eligible.select(flags[name]).to_series()
        funnel[f"excluded_{name}"] = int(hit.sum())
        eligible = eligible.filter(~hit)
    per = campaign["capacity"]["per"]
    group = {"district": "district_code", "account_manager": "account_manager_id"}.get(per)
    if group:
        funnel[f"excluded_no_{per}"] = int(eligible[group].is_null().sum())
        eligible = eligible.filter(pl.col(group).is_not_null())
    funnel["after_exclusions"] = len(eligible)
    ranked = eligible.with_columns(score(eligible, campaign["score"])).sort(
        ["score", "customer_id"], descending=[True, False]
    )
    within = pl.int_range(pl.len()).over(group) if group else pl.int_range(pl.len())
    kept = ranked.filter(within < campaign["capacity"]["limit"])
    funnel["over_capacity"] = len(ranked) - len(kept)
    funnel["targets"] = len(kept)
    fmt = ReasonFormatter()
    reasons = [fmt.format(campaign["reason"], **row) for row in kept.iter_rows(named=True)]
    targets = kept.with_row_index("rank", offset=1).with_columns(
        pl.lit(campaign["code"]).alias("campaign_code"),
        pl.lit(month).alias("as_of_month"),
        pl.lit(run_id).alias("run_id"),
        pl.col("rank").cast(pl.Int32),
        pl.Series("reason", reasons, dtype=pl.String),
        pl.lit(campaign["channel"]).alias("channel"),
    )
    targets = targets.select(list(TARGET_LABELS))
    return CampaignResult(campaign["code"], targets, funnel)


def assign_account_managers(customers: pl.DataFrame, roster: list[dict]) -> pl.Series:
    """The account manager responsible for each customer: one of the managers of the
    customer's district, chosen by a stable hash of the customer id (the same every run, and
    spread evenly); null where the district has none."""
    by_district: dict[str, list[str]] = {}
    for row in sorted(roster, key=lambda r: r["manager_id"]):
        by_district.setdefault(row["district_code"], []).append(row["manager_id"])
    out = []
    for customer_id, district in zip(
        customers["customer_id"], customers["district_code"], strict=True
    ):
        managers = by_district.get(district)
        out.append(managers[zlib.crc32(customer_id.encode()) % len(managers)] if managers else None)
    return pl.Series("account_manager_id", out, dtype=pl.String)


def write_target_files(
    targets: pl.DataFrame, folder: Path, code: str, month: date, contact_labels: dict[str, str]
) -> tuple[Path, Path]:
    """``<folder>/<code>_<YYYYMM>.csv`` (UTF-8 with a BOM, Chinese headers, for Excel) and
    ``.parquet`` (English names), each written beside and moved into place whole."""
    stem = folder / f"{code}_{month:%Y%m}"
    labels = {**TARGET_LABELS, **contact_labels}
    paths = (stem.with_suffix(".csv"), stem.with_suffix(".parquet"))
    with replaced(paths[0]) as tmp_csv, replaced(paths[1]) as tmp_parquet:
        targets.rename({c: f"{labels[c]} {c}" for c in targets.columns}).write_csv(
            tmp_csv, include_bom=True
        )
        targets.write_parquet(tmp_parquet)
    return paths

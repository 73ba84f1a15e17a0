"""One class of customer, one set of services: each segment's service plan and each customer's.

The plans are data (``business_rules/service_plans.yaml``); a customer's plan is the plan of
their segment, with their account manager where the plan gives one and the repair-arrival
promise for their district's area type.
"""

from __future__ import annotations

import polars as pl


def plan_frame(plans: dict) -> pl.DataFrame:
    """publish.segment_service_plan: one row per segment and its package."""
    return pl.DataFrame(
        [
            {
                "segment_code": segment,
                "plan_code": p["code"],
                "plan_name_zh": p["zh"],
                "plan_name_en": p["en"],
                "has_account_manager": p["account_manager"],
                "reports": p["reports"],
                "outreach_channels": p["outreach_channels"],
                "service_channels": p["service_channels"],
                "response_minutes": p["response_minutes"],
                "repair_arrival_minutes_urban": p["repair_arrival_minutes"]["urban"],
                "repair_arrival_minutes_rural": p["repair_arrival_minutes"]["rural"],
                "plans_version": plans["version"],
            }
            for segment, p in plans["plans"].items()
        ]
    )


def customer_plans(customers: pl.DataFrame, plans: pl.DataFrame) -> pl.DataFrame:
    """publish.customer_service_plan. ``customers``: customer_id, as_of_month, segment_code,
    area_type and account_manager_id (the manager responsible for the customer's district)."""
    joined = customers.join(plans, on="segment_code", how="left", validate="m:1")
    missing = joined.filter(pl.col("plan_code").is_null())["segment_code"].unique().to_list()
    if missing:
        raise ValueError(f"segments without a service plan: {missing}")
    return joined.select(
        "customer_id",
        "as_of_month",
        "segment_code",
        "plan_code",
        pl.when(pl.col("has_account_manager"))
        .then(pl.col("account_manager_id"))
        .alias("account_manager_id"),
        "response_minutes",
        pl.when(pl.col("area_type") == "rural")
        .then(pl.col("repair_arrival_minutes_rural"))
        .otherwise(pl.col("repair_arrival_minutes_urban"))
        .alias("repair_arrival_minutes"),
    ).sort("customer_id")

"""The second baseline: what an analyst would write instead — pandas on the raw tables.

It computes every feature column of ``customer_features``, with the platform's rules:
- usage: energy from the cumulative registers — the total and the four time-of-use periods —
  (the latest extract wins, meter changes, spikes, register wraps, a period step that falls or
  outruns the total, gaps spread over their days), per month and over trailing 12 months, with
  the platform's calendar (workdays, public holidays, seasons), each customer's district and
  its weather (the degree-day slopes), and the load curves' peak and load factor;
- attributes: the archive snapshot valid in the month;
- behaviour and credit: the bills (corrections replace what they correct), the payments
  (reversals cancel the payment they name), the arrears, and when each bill due was paid;
- demand: the work orders' latest versions by kind and satisfaction, and the outages of each
  customer's transformer area while the account was open.

Its rows run from a customer's first month of energy to its last.

    python bench/pandas_features.py WAREHOUSE OUT.parquet
"""

from __future__ import annotations

import sys
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
from pandas.api.typing import DataFrameGroupBy, SeriesGroupBy

SEASONS = ("summer", "winter", "shoulder")
CURVE_POINTS = [f"P{i}" for i in range(1, 97)]  # a load curve's 96 quarter-hours, kW
# A day at or above this mean temperature counts towards cooling, below it towards heating
# (int_customer_month_usage); the degree-days' bases are the project's vars.
COOLING_DAY_C = 19
RATES = ("tip", "peak", "flat", "valley")
# The registers of a daily reading: the total and the four periods, in the raw table's columns.
REGISTERS = {"kwh": "PAP_R", **{rate: f"PAP_R{i}" for i, rate in enumerate(RATES, 1)}}
RAW = {
    "readings": f"select METER_ID, CONS_NO, DATA_DATE, {', '.join(REGISTERS.values())}, "
    "_source_file, _row_number from raw.ami__daily_reading",
    "changes": "select OLD_METER_ID, NEW_METER_ID, CONS_NO, CHANGE_DATE, OLD_FINAL_R, NEW_INIT_R, "
    "_source_file, _row_number from raw.ami__meter_change",
    "curves": f"select METER_ID, CONS_NO, DATA_DATE, {', '.join(CURVE_POINTS)}, _source_file, "
    "_row_number from raw.ami__load_curve",
    "archive": "select CONS_NO, ELEC_TYPE_CODE, STATUS_CODE, CONTRACT_CAP, ORG_NO, TG_ID, "
    "SPECIAL_FLAG, TOU_FLAG, BUILD_DATE, BIRTH_YEAR, _period, _source_file, _row_number "
    "from raw.mkt__cons_archive",
    "weather": "select DATE, DISTRICT_CODE, T_MAX, T_MIN, _source_file, _row_number "
    "from raw.ext__weather_daily",
    "bills": "select CONS_NO, BILL_YM, TIP_PQ, PEAK_PQ, FLAT_PQ, VALLEY_PQ, T_AMT, PRC_CODE, "
    "BILL_FLAG, REL_DATE, DUE_DATE, _source_file, _row_number from raw.mkt__monthly_bill",
    "payments": "select PAY_SN, CONS_NO, PAY_TIME, PAY_AMT, PAY_MODE, BILL_YM, REV_FLAG, "
    "ORIG_PAY_SN, _source_file, _row_number from raw.fin__payment",
    "arrears": "select CONS_NO, BILL_YM, OWE_AMT, PENALTY_AMT, SNAP_DATE, _source_file, "
    "_row_number from raw.fin__arrears",
    "orders": "select order_no, version, cons_no, order_type, accept_time, satisfaction, "
    "_source_file, _row_number from raw.crm__work_order",
    "outages": "select OUTAGE_ID, TG_ID, START_TIME, END_TIME, _source_file, _row_number "
    "from raw.om__outage",
    # Reference data, as the floor reads it: the districts and satisfaction scores the project
    # seeds, and the calendar the platform builds from its rules.
    "districts": "select district_code from staging.districts",
    "scores": "select satisfaction, satisfaction_score from staging.satisfaction_scores",
    "calendar": "select calendar_date, is_workday, is_public_holiday, season "
    "from marts.dim_calendar",
}


def read_raw(warehouse: Path) -> dict[str, pd.DataFrame]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return {name: con.sql(sql).df() for name, sql in RAW.items()}


def normalise_cons_no(raw: pd.Series) -> pd.Series:
    """As the platform's macro: `HB` prefix, spaces and dashes dropped, then 1–10 digits
    left-padded to 10; anything else is no account."""
    stripped = raw.str.upper().str.replace(r"^[\t\n\f\r ]*HB|[\t\n\f\r \u3000-]", "", regex=True)
    ok = stripped.str.fullmatch(r"[0-9]{1,10}").fillna(False).astype(bool)
    return stripped.str.zfill(10).where(ok)


def latest_per_key(frame: pd.DataFrame, key: list[str]) -> pd.DataFrame:
    """The latest extract wins, and within one file the last row."""
    ordered = frame.sort_values(
        [*key, "_source_file", "_row_number"], ascending=[True] * len(key) + [False, False]
    )
    return ordered.drop_duplicates(key, keep="first")


def daily_energy(readings: pd.DataFrame, changes: pd.DataFrame) -> pd.DataFrame:
    """Energy per customer and day, the total and each period's, with the day's flags: spread
    over a gap, bridging a spike, or with a step that fell."""
    readings = latest_per_key(readings, ["METER_ID", "DATA_DATE"])
    series = pd.DataFrame(
        {
            "meter_id": readings["METER_ID"],
            "customer_id": normalise_cons_no(readings["CONS_NO"]),
            "reading_date": pd.to_datetime(readings["DATA_DATE"]),
            **{name: readings[column].astype("float64") for name, column in REGISTERS.items()},
            "from_change": False,
        }
    )
    changes = latest_per_key(changes, ["CONS_NO", "OLD_METER_ID", "NEW_METER_ID"])
    customer = normalise_cons_no(changes["CONS_NO"])
    changed = pd.to_datetime(changes["CHANGE_DATE"])
    # A meter change records the total register only: the periods' are unknown on its points.
    points = pd.concat(
        [
            pd.DataFrame(
                {
                    "meter_id": changes["OLD_METER_ID"],
                    "customer_id": customer,
                    "reading_date": changed,
                    "kwh": changes["OLD_FINAL_R"].astype("float64"),
                }
            ),
            pd.DataFrame(
                {
                    "meter_id": changes["NEW_METER_ID"],
                    "customer_id": customer,
                    "reading_date": changed - pd.Timedelta(days=1),
                    "kwh": changes["NEW_INIT_R"].astype("float64"),
                }
            ),
        ]
    )
    for rate in RATES:
        points[rate] = np.nan
    points["from_change"] = True
    key = ["meter_id", "customer_id", "reading_date"]
    # Two change records on one meter's day: the lower register value is kept.
    points = points.sort_values([*key, "kwh"]).drop_duplicates(key)
    # A real reading of the same meter and day wins over a recorded change value.
    taken = points.merge(series[key], on=key, how="left", indicator=True)["_merge"] == "both"
    combined = pd.concat([series, points[~taken.to_numpy()]], ignore_index=True)
    combined = combined.sort_values(["customer_id", "meter_id", "reading_date"], kind="stable")

    by_meter = combined.groupby(["customer_id", "meter_id"], dropna=False, sort=False)
    previous = by_meter["kwh"].shift(1)
    following = by_meter["kwh"].shift(-1)
    r = combined["kwh"]
    spike = ~combined["from_change"] & (following >= previous) & ((r > following) | (r < previous))
    combined["point_before"] = by_meter["reading_date"].shift(1)
    kept = combined[~spike.to_numpy()]

    by_meter = kept.groupby(["customer_id", "meter_id"], dropna=False, sort=False)
    previous_date = by_meter["reading_date"].shift(1)
    previous_kwh = by_meter["kwh"].shift(1)
    step = kept["kwh"] - previous_kwh
    has_previous = previous_date.notna().to_numpy()
    steps = pd.DataFrame(
        {
            "customer_id": kept["customer_id"],
            "previous_date": previous_date,
            "reading_date": kept["reading_date"],
            "register_kwh": kept["kwh"],
            "previous_kwh": previous_kwh,
            "step": step,
            # The step bridges spikes skipped between its two points.
            "bridges_spike": kept["point_before"] != previous_date,
            **{f"{rate}_step": kept[rate] - by_meter[rate].shift(1) for rate in RATES},
        }
    )[has_previous]
    # An old register wraps at 99999.99 or 999999.99: a drop from near the top to near zero.
    with np.errstate(invalid="ignore", divide="ignore"):
        wrap_at = 10.0 ** np.ceil(np.log10(steps["previous_kwh"] + 0.01))
    wrapped = steps["register_kwh"] + wrap_at - steps["previous_kwh"]
    is_wrap = (steps["previous_kwh"] >= 0.9 * wrap_at) & (wrapped < 0.1 * wrap_at)
    span = {"kwh": steps["step"].where(steps["step"] >= 0, wrapped.where(is_wrap))}
    # A period register can neither fall nor outrun the total: such a step is unknown.
    total_step = steps["step"].fillna(0.0)
    for rate in RATES:
        rate_step = steps[f"{rate}_step"]
        span[rate] = rate_step.where((rate_step >= 0) & (rate_step <= total_step + 0.011))
    span_days = (steps["reading_date"] - steps["previous_date"]).dt.days

    # A gap's energy spread evenly over its days.
    repeat = span_days.to_numpy()
    offsets = np.arange(repeat.sum()) - np.repeat(np.cumsum(repeat) - repeat, repeat)

    def spread(values: pd.Series) -> np.ndarray:
        return np.repeat(values.to_numpy(), repeat)

    pieces = pd.DataFrame(
        {
            "customer_id": spread(steps["customer_id"]),
            "energy_date": spread(steps["previous_date"]) + pd.to_timedelta(offsets + 1, unit="D"),
            **{name: spread(value / span_days) for name, value in span.items()},
            "is_estimated": spread(span_days > 1),
            "is_spike_adjusted": spread(steps["bridges_spike"]),
            "has_negative_step": spread(span["kwh"].isna()),
        }
    )
    by_day = pieces.groupby(["customer_id", "energy_date"], sort=False)
    pieces_per_day = by_day.size()
    known = by_day[list(RATES)].count()
    sums = by_day[list(span)].sum(min_count=1)
    days = pd.DataFrame(
        {
            "kwh": sums["kwh"],
            # A period's energy is known only when every piece of the day has its register.
            **{rate: sums[rate].where(known[rate] == pieces_per_day) for rate in RATES},
            **by_day[["is_estimated", "is_spike_adjusted", "has_negative_step"]].any(),
        }
    )
    return days.reset_index()


def monthly_load(curves: pd.DataFrame) -> pd.DataFrame:
    """Per customer and month, from the latest extract of each meter's day: the highest
    quarter-hour kW, and the sum and count of the quarter-hours read."""
    curves = latest_per_key(curves, ["METER_ID", "DATA_DATE"])
    points = curves[CURVE_POINTS]
    load = pd.DataFrame(
        {
            "customer_id": normalise_cons_no(curves["CONS_NO"]),
            "month": pd.to_datetime(curves["DATA_DATE"]).dt.to_period("M"),
            "peak_kw": points.max(axis=1),
            "kw_sum": points.sum(axis=1),
            "points": points.count(axis=1),
        }
    )
    by_month = load.groupby(["customer_id", "month"])
    return by_month.agg(
        peak_kw=("peak_kw", "max"), kw_sum=("kw_sum", "sum"), points=("points", "sum")
    )


def project_vars() -> dict:
    """The dbt project's vars: the degree-days' bases, the names of the payment channels and of
    the kinds of work order. The project's folder is named here, not imported from
    orchestration.assets.warehouse, whose Dagster imports would count against this timed
    baseline."""
    import yaml

    project = yaml.safe_load(
        (Path(__file__).parents[1] / "dbt_project/dbt_project.yml").read_text()
    )
    return project["vars"]


def month_start(text: pd.Series) -> pd.Series:
    """YYYYMM text → its month, as the platform's macro reads it (the first four characters and
    the last two)."""
    return pd.to_datetime(text.str[:4] + text.str[-2:], format="%Y%m").dt.to_period("M")


def month_index(months: pd.Series) -> pd.Series:
    return months.dt.year * 12 + months.dt.month


def ratio(a: pd.Series, b: pd.Series) -> pd.Series:
    """``a / b``, none where ``b`` is 0 (as the platform's safe_ratio)."""
    return a / b.replace(0, np.nan)


def trailing(
    by_customer: DataFrameGroupBy | SeriesGroupBy, months: int, how: str
) -> pd.DataFrame | pd.Series:
    """Each row's ``how`` (sum, max, count) over its customer's last ``months`` rows, itself
    included; ``by_customer`` is a frame or series grouped by customer, one row per month."""
    rolled = getattr(by_customer.rolling(months, min_periods=1), how)()
    return rolled.reset_index(level=0, drop=True)


def snapshots(archive: pd.DataFrame) -> pd.DataFrame:
    """One row per customer and archive month, the latest extract of each, typed."""
    archive = latest_per_key(archive, ["CONS_NO", "_period"])
    opened = archive["BUILD_DATE"]
    months = month_start(archive["_period"])
    frame = pd.DataFrame(
        {
            "customer_id": normalise_cons_no(archive["CONS_NO"]),
            "month_index": month_index(months),
            "elec_type_code": archive["ELEC_TYPE_CODE"],
            "status_code": archive["STATUS_CODE"],
            "contract_capacity_kva": archive["CONTRACT_CAP"].astype("float64"),
            "district_code": archive["ORG_NO"].str[:6],
            "tg_id": archive["TG_ID"],
            "special_flag": archive["SPECIAL_FLAG"].fillna("0"),
            "is_tou": archive["TOU_FLAG"]
            .eq("Y")
            .astype("boolean")
            .mask(archive["TOU_FLAG"].isna()),
            "opened_date": pd.to_datetime(
                opened.mask(opened.isin(["", "00000000"])), format="%Y%m%d", errors="coerce"
            ),
            "birth_year": archive["BIRTH_YEAR"],
        }
    )
    return frame[frame["customer_id"].notna()]


def day_context(
    raw: dict[str, pd.DataFrame], snaps: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """What a day's energy is joined with: each customer's district (its latest snapshot's),
    each district's mean temperature per day, and the calendar."""
    latest = snaps.sort_values("month_index").drop_duplicates("customer_id", keep="last")
    districts = latest[["customer_id", "district_code"]]
    weather = latest_per_key(raw["weather"], ["DATE", "DISTRICT_CODE"])
    weather = pd.DataFrame(
        {
            "energy_date": pd.to_datetime(weather["DATE"]),
            "district_code": weather["DISTRICT_CODE"],
            "t_mean_c": (weather["T_MAX"] + weather["T_MIN"]) / 2,
        }
    )
    calendar = raw["calendar"].assign(energy_date=pd.to_datetime(raw["calendar"]["calendar_date"]))
    return districts, weather, calendar.drop(columns="calendar_date")


def usage_features(
    raw: dict[str, pd.DataFrame], snaps: pd.DataFrame, settings: dict
) -> pd.DataFrame:
    """The usage features per customer and month, from its first month of energy to its last."""
    days = daily_energy(raw["readings"], raw["changes"])
    districts, weather, calendar = day_context(raw, snaps)
    # Every customer the archive knows has a latest snapshot, so a district row.
    known = set(districts["customer_id"].dropna())
    days = days[days["customer_id"].isin(known)].copy()
    days["month"] = days["energy_date"].dt.to_period("M")
    days = days.merge(districts, on="customer_id", how="left")
    days = days.merge(calendar, on="energy_date", how="left")
    days = days.merge(weather, on=["energy_date", "district_code"], how="left")
    # The platform joins a day's context on the districts it knows, and no district: a customer
    # whose district is none of those has no calendar and no weather.
    unknown_district = days["district_code"].notna() & ~days["district_code"].isin(
        set(raw["districts"]["district_code"])
    )
    for column in ("is_workday", "is_public_holiday", "season", "t_mean_c"):
        days[column] = days[column].where(~unknown_district)
    all_rates = days[list(RATES)].notna().all(axis=1)
    clean = ~(days["is_estimated"] | days["is_spike_adjusted"] | days["has_negative_step"])
    clean &= days["kwh"].notna()
    days = days.assign(
        rate_kwh=days["kwh"].where(all_rates),
        **{f"rate_{rate}": days[rate].where(all_rates) for rate in RATES},
        clean_kwh=days["kwh"].where(clean),
        clean_kwh_sq=(days["kwh"] ** 2).where(clean),
        # A day outside the calendar is neither a workday nor a rest day.
        workday_kwh=days["kwh"].where(clean & days["is_workday"].eq(True)),
        restday_kwh=days["kwh"].where(clean & days["is_workday"].eq(False)),
        holiday_kwh=days["kwh"].where(clean & days["is_public_holiday"].eq(True)),
        **{
            f"{season}_kwh": days["kwh"].where(clean & days["season"].eq(season))
            for season in SEASONS
        },
    )
    # Degree-days against kWh, for the slopes: the warm days' cooling, the cool days' heating.
    cooling_base, heating_base = settings["cooling_base_c"], settings["heating_base_c"]
    t = days["t_mean_c"].astype("float64")
    for name, degrees, on in (
        ("cool", (t - cooling_base).clip(lower=0), clean & (t >= COOLING_DAY_C)),
        ("heat", (heating_base - t).clip(lower=0), clean & (t < COOLING_DAY_C)),
    ):
        days[f"{name}_n"] = on.astype("int64")
        days[f"{name}_x"] = degrees.where(on)
        days[f"{name}_xx"] = (degrees * degrees).where(on)
        days[f"{name}_y"] = days["kwh"].where(on)
        days[f"{name}_xy"] = (degrees * days["kwh"]).where(on)
    regression = [f"{name}_{part}" for name in ("cool", "heat") for part in ["x", "xx", "y", "xy"]]
    by_month = days.groupby(["customer_id", "month"])
    # Each kind of clean day: its days and their kWh.
    kinds = ["clean", "workday", "restday", "holiday", *SEASONS]
    sums = ["kwh", "rate_kwh", *(f"rate_{rate}" for rate in RATES), "clean_kwh_sq"]
    monthly = by_month[sums + [f"{kind}_kwh" for kind in kinds] + regression].sum(min_count=1)
    monthly["cool_n"] = by_month["cool_n"].sum()
    monthly["heat_n"] = by_month["heat_n"].sum()
    monthly["days_measured"] = by_month["kwh"].count()
    monthly["days_estimated"] = by_month["is_estimated"].sum()
    for kind in kinds:
        monthly[f"{kind}_days"] = by_month[f"{kind}_kwh"].count()
    monthly = monthly.reset_index()
    # Every month from a customer's first to its last, so windows count calendar months.
    spans = monthly.groupby("customer_id")["month"].agg(["min", "max"])
    grid = pd.DataFrame(
        [
            (customer, month)
            for customer, first, last in spans.itertuples()
            for month in pd.period_range(first, last, freq="M")
        ],
        columns=["customer_id", "month"],
    )
    monthly = grid.merge(monthly, on=["customer_id", "month"], how="left")
    monthly = monthly.merge(monthly_load(raw["curves"]), on=["customer_id", "month"], how="left")
    # The kWh trend is a least-squares slope over the months with energy, from sums; months
    # count from the customer's first, so the sums of squares stay small and exact enough.
    index = month_index(monthly["month"])
    x = (index - index.groupby(monthly["customer_id"]).transform("min")).astype("float64")
    x = x.where(monthly["kwh"].notna())
    monthly = monthly.assign(trend_x=x, trend_xx=x * x, trend_xy=x * monthly["kwh"])
    summed = [c for c in monthly.columns if c not in ("customer_id", "month", "peak_kw")]
    by_customer = monthly.groupby("customer_id")
    s = trailing(by_customer[summed], 12, "sum")
    s6 = trailing(by_customer[["rate_kwh", "rate_valley"]], 6, "sum")
    peak_kw = trailing(by_customer["peak_kw"], 12, "max")
    months_with_energy = trailing(by_customer["kwh"], 12, "count")
    s_kwh = s["kwh"].where(months_with_energy > 0)

    n, k, kk = s["clean_days"], s["clean_kwh"], s["clean_kwh_sq"]
    with np.errstate(invalid="ignore", divide="ignore"):
        variance = ((kk - k * k / n) / (n - 1)).clip(lower=0)
        daily_cv = (np.sqrt(variance) / (k / n)).where((n >= 2) & (k > 0))
        m, sx, sxx, sxy = months_with_energy, s["trend_x"], s["trend_xx"], s["trend_xy"]
        slope = (m * sxy - sx * s_kwh) / (m * sxx - sx * sx)
        trend = ratio(slope, s_kwh / m).where(m >= 6)

    def slope(name: str) -> pd.Series:
        n, x, xx, y, xy = (s[f"{name}_{part}"] for part in ["n", "x", "xx", "y", "xy"])
        spread = n * xx - x * x
        return ((n * xy - x * y) / spread).where((n >= 10) & (spread.abs() > 1e-9))

    def per_day(kind: str) -> pd.Series:
        return ratio(s[f"{kind}_kwh"], s[f"{kind}_days"])

    return pd.DataFrame(
        {
            "customer_id": monthly["customer_id"],
            "as_of_month": monthly["month"].dt.to_timestamp().dt.date,
            "kwh_month": monthly["kwh"].fillna(0.0),
            "kwh_12m": s_kwh.fillna(0.0),
            "months_with_energy_12m": months_with_energy.astype("int32"),
            "kwh_avg_month_12m": ratio(s_kwh, months_with_energy),
            "kwh_avg_day_12m": ratio(s_kwh, s["days_measured"]),
            "estimated_day_share_12m": ratio(s["days_estimated"], s["days_measured"]),
            **{f"{rate}_share_12m": ratio(s[f"rate_{rate}"], s["rate_kwh"]) for rate in RATES},
            "peak_valley_ratio_12m": ratio(s["rate_tip"] + s["rate_peak"], s["rate_valley"]),
            "daily_cv_12m": daily_cv,
            **{
                f"{season}_ratio_12m": ratio(per_day(season), per_day("clean"))
                for season in SEASONS
            },
            "weekend_weekday_ratio_12m": ratio(per_day("restday"), per_day("workday")),
            "holiday_ratio_12m": ratio(per_day("holiday"), per_day("workday")),
            "kwh_trend_12m": trend,
            "cooling_slope_kwh_per_c": slope("cool"),
            "heating_slope_kwh_per_c": slope("heat"),
            "valley_shift_6m": ratio(s6["rate_valley"], s6["rate_kwh"])
            - ratio(s["rate_valley"] - s6["rate_valley"], s["rate_kwh"] - s6["rate_kwh"]),
            "peak_kw_12m": peak_kw,
            "load_factor_12m": ratio(ratio(s["kw_sum"], s["points"]), peak_kw),
            "first_month": monthly.groupby("customer_id")["month"]
            .transform("min")
            .dt.to_timestamp()
            .dt.date,
        }
    )


def attribute_features(snaps: pd.DataFrame, grid: pd.DataFrame) -> pd.DataFrame:
    """Each grid customer-month's archive attributes: its latest snapshot at or before the
    month (a month without one, a rejected archive file, keeps the month before's); none
    after an account left the archive, which ends it after the last month it was seen."""
    snaps = snaps.sort_values("month_index")
    found = (
        pd.merge_asof(
            grid.reset_index().sort_values("month_index"),
            snaps,
            on="month_index",
            by="customer_id",
        )
        .set_index("index")
        .sort_index()
    )
    last_seen = found["customer_id"].map(snaps.groupby("customer_id")["month_index"].max())
    left = (last_seen < snaps["month_index"].max()) & (found["month_index"] > last_seen)
    found = found[~left].reindex(found.index)
    residential = found["elec_type_code"].eq("100").astype("boolean")
    residential = residential.mask(found["elec_type_code"].isna())
    as_of = grid["month"]
    opened = found["opened_date"].dt.to_period("M")
    return pd.DataFrame(
        {
            "elec_type_code": found["elec_type_code"],
            "is_residential": residential,
            "district_code": found["district_code"],
            "status_code": found["status_code"],
            "special_flag": found["special_flag"],
            "is_tou": found["is_tou"].astype("boolean"),
            "contract_capacity_kva": found["contract_capacity_kva"].astype("float64"),
            "tenure_months": grid["month_index"] - month_index(opened),
            "holder_age_years": (as_of.dt.year - found["birth_year"]).where(
                residential.fillna(False).astype(bool)
            ),
            # What the outages are matched on: the account's transformer area, and whether
            # it was open.
            "tg_id": found["tg_id"],
            "is_open": found["status_code"].notna() & found["status_code"].ne("9"),
        }
    )


def bills(raw: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One bill per account and billing month: a correction replaces the bill it corrects;
    among several versions the latest issued, then the latest extract, wins."""
    b = raw["bills"].assign(is_correction=raw["bills"]["BILL_FLAG"].eq("C"))
    b = b.sort_values(
        ["CONS_NO", "BILL_YM", "is_correction", "REL_DATE", "_source_file", "_row_number"],
        ascending=[True, True, False, False, False, False],
        na_position="last",
    ).drop_duplicates(["CONS_NO", "BILL_YM"])
    periods = b[["TIP_PQ", "PEAK_PQ", "FLAT_PQ", "VALLEY_PQ"]].astype("float64").fillna(0.0)
    months = month_start(b["BILL_YM"])
    return pd.DataFrame(
        {
            "customer_id": normalise_cons_no(b["CONS_NO"]),
            "month_index": month_index(months),
            "bill_yuan": b["T_AMT"].astype("float64"),
            "tariff_code": b["PRC_CODE"],
            "is_tou_billed": periods.sum(axis=1) > 0,
            "due_date": pd.to_datetime(b["DUE_DATE"]),
        }
    )


def payments(raw: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Every payment once (its latest extract), in yuan; a reversed payment and its reversal
    both count nothing (`net_yuan` 0)."""
    p = latest_per_key(raw["payments"], ["PAY_SN"])
    text = p["PAY_TIME"]
    paid_at = pd.to_datetime(text, format="%Y/%m/%d %H:%M:%S", errors="coerce").fillna(
        pd.to_datetime(text, format="%Y%m%d%H%M%S", errors="coerce")
    )
    bill_ym = p["BILL_YM"].str.strip(" ").replace("", np.nan)
    is_reversal = p["REV_FLAG"].eq("1")
    reversed_id = p["ORIG_PAY_SN"].str.strip(" ").replace("", np.nan)
    is_cancelled = ~is_reversal & p["PAY_SN"].isin(set(reversed_id[is_reversal].dropna()))
    amount = p["PAY_AMT"].astype("float64") / 100
    return pd.DataFrame(
        {
            "customer_id": normalise_cons_no(p["CONS_NO"]),
            "paid_at": paid_at,
            "month_index": month_index(paid_at),
            "pay_mode": p["PAY_MODE"],
            "bill_index": month_index(month_start(p["BILL_YM"].where(bill_ym.notna()))),
            "is_prepayment": bill_ym.isna(),
            "is_reversal": is_reversal,
            "counts": ~is_reversal & ~is_cancelled,
            "net_yuan": amount.mask(is_reversal | is_cancelled, 0.0),
        }
    )


KEYS_BY_MONTH = ["customer_id", "month_index"]


def known_months(frame: pd.DataFrame, known: set[str]) -> pd.DataFrame:
    """The known customers' rows that have a month (a time that did not parse has none)."""
    frame = frame[frame["customer_id"].isin(known) & frame["month_index"].notna()]
    return frame.astype({"month_index": "int64"})


def payment_months(paid: pd.DataFrame, known: set[str], channels: dict[str, str]) -> pd.DataFrame:
    """Per customer and month paid: the payments that count, by channel and online (codes
    03-05, the app, WeChat and Alipay, as stg_fin__payments), the yuan paid and prepaid, and
    the reversals."""
    paid = known_months(paid, known)
    counted = paid["counts"]
    counts = {
        "payments": counted,
        **{
            f"payments_{name}": counted & paid["pay_mode"].eq(mode)
            for mode, name in channels.items()
        },
        "payments_online": counted & paid["pay_mode"].isin(["03", "04", "05"]),
        "reversals": paid["is_reversal"],
    }
    by_month = paid.assign(
        **{name: flags.astype("int64") for name, flags in counts.items()},
        prepaid_yuan=paid["net_yuan"].where(paid["is_prepayment"]),
    ).groupby(KEYS_BY_MONTH)
    yuan = by_month[["net_yuan", "prepaid_yuan"]].sum(min_count=1)
    return by_month[list(counts)].sum().join(yuan.rename(columns={"net_yuan": "paid_yuan"}))


def order_months(
    raw: dict[str, pd.DataFrame], known: set[str], kinds: dict[str, str]
) -> pd.DataFrame:
    """Per customer and month accepted: the work orders (each its latest version) by kind, and
    their satisfaction."""
    orders = latest_per_key(raw["orders"], ["order_no", "version"])
    orders = orders.sort_values(["order_no", "version"], ascending=[True, False])
    orders = orders.drop_duplicates("order_no")
    accepted = pd.to_datetime(orders["accept_time"], utc=True, format="ISO8601", errors="coerce")
    accepted = accepted.dt.tz_convert("Asia/Shanghai").dt.tz_localize(None)
    scores = raw["scores"].set_index("satisfaction")["satisfaction_score"]
    score = orders["satisfaction"].map(scores).astype("float64")
    orders = pd.DataFrame(
        {
            "customer_id": normalise_cons_no(orders["cons_no"]),
            "month_index": month_index(accepted),
            "work_orders": 1,
            **{name: orders["order_type"].eq(kind).astype("int64") for kind, name in kinds.items()},
            "rated_orders": score.notna().astype("int64"),
            "satisfaction_points": score,
            "dissatisfied": (score <= 1).astype("int64"),
        }
    )
    by_month = known_months(orders, known).groupby(KEYS_BY_MONTH)
    return by_month.sum().assign(
        satisfaction_points=by_month["satisfaction_points"].sum(min_count=1)
    )


def outage_months(raw: dict[str, pd.DataFrame], attributes: pd.DataFrame) -> pd.DataFrame:
    """Per customer and month: the outages of its transformer area that started while its
    account was open, and their minutes."""
    outages = latest_per_key(raw["outages"], ["OUTAGE_ID"])
    started, ended = outages["START_TIME"], outages["END_TIME"]
    outages = pd.DataFrame(
        {
            "tg_id": outages["TG_ID"],
            "month_index": month_index(started),
            "outages": 1,
            # An outage still on, or whose times are out of order, has no duration.
            "outage_minutes": (
                (ended.dt.floor("s") - started.dt.floor("s")).dt.total_seconds() / 60
            ).where(ended >= started),
        }
    )
    outages = outages[outages["month_index"].notna()].astype({"month_index": "int64"})
    fed = attributes.loc[attributes["is_open"], [*KEYS_BY_MONTH, "tg_id"]]
    by_month = fed.merge(outages, on=["tg_id", "month_index"]).groupby(KEYS_BY_MONTH)
    return pd.DataFrame(
        {
            "outages": by_month["outages"].sum(),
            "outage_minutes": by_month["outage_minutes"].sum(min_count=1),
        }
    )


def arrears_months(
    raw: dict[str, pd.DataFrame], known: set[str], bill: pd.DataFrame
) -> pd.DataFrame:
    """Per customer and month-end snapshot: the yuan owed, the late fees, and the most days a
    bill owed was overdue."""
    arrears = latest_per_key(raw["arrears"], ["CONS_NO", "BILL_YM", "SNAP_DATE"])
    snapshot = pd.to_datetime(arrears["SNAP_DATE"])
    arrears = pd.DataFrame(
        {
            "customer_id": normalise_cons_no(arrears["CONS_NO"]),
            "bill_index": month_index(month_start(arrears["BILL_YM"])),
            "month_index": month_index(snapshot),
            "arrears_yuan": arrears["OWE_AMT"].astype("float64"),
            "late_fee_yuan": arrears["PENALTY_AMT"].astype("float64").fillna(0.0),
            "snapshot": snapshot,
        }
    )
    due = bill.rename(columns={"month_index": "bill_index"})[
        ["customer_id", "bill_index", "due_date"]
    ]
    arrears = arrears.merge(due, on=["customer_id", "bill_index"], how="left")
    arrears["max_days_overdue"] = (arrears["snapshot"] - arrears["due_date"]).dt.days
    by_month = known_months(arrears, known).groupby(KEYS_BY_MONTH)
    owed = by_month[["arrears_yuan", "late_fee_yuan"]].sum(min_count=1)
    return owed.join(by_month["max_days_overdue"].max())


def monthly_activity(
    raw: dict[str, pd.DataFrame],
    known: set[str],
    bill: pd.DataFrame,
    paid: pd.DataFrame,
    attributes: pd.DataFrame,
    settings: dict,
) -> pd.DataFrame:
    """Per customer and month: payments by channel, work orders by kind, satisfaction, outages,
    arrears and the bill."""
    bill_months = bill.loc[
        bill["customer_id"].isin(known),
        [*KEYS_BY_MONTH, "bill_yuan", "tariff_code", "is_tou_billed"],
    ].set_index(KEYS_BY_MONTH)
    return pd.concat(
        [
            payment_months(paid, known, settings["pay_channels"]),
            order_months(raw, known, settings["work_order_kinds"]),
            outage_months(raw, attributes),
            arrears_months(raw, known, bill),
            bill_months,
        ],
        axis=1,
    )


def credit(
    bill: pd.DataFrame, paid: pd.DataFrame, known: set[str], grid: pd.DataFrame
) -> pd.DataFrame:
    """Per grid customer-month: how the bills that fell due in the last 12 months were paid, as
    far as was known at the month's end (a payment after it counts as not yet made)."""
    settling = paid[paid["counts"] & paid["bill_index"].notna()]
    settling = settling.astype({"bill_index": "int64"})
    first_paid = settling.groupby(["customer_id", "bill_index"])["paid_at"].min().dt.normalize()
    due = bill[bill["customer_id"].isin(known) & bill["due_date"].notna()]
    due = due.rename(columns={"month_index": "bill_index"}).join(
        first_paid.rename("paid_date"), on=["customer_id", "bill_index"]
    )
    months = grid[["customer_id", "month_index", "month_end"]].reset_index()
    # Each bill against the as-of months it is within 12 months of.
    windows = pd.concat(
        [due.assign(month_index=due["bill_index"] + ago, months_ago=ago) for ago in range(12)]
    ).merge(months, on=["customer_id", "month_index"])
    windows = windows[windows["due_date"] <= windows["month_end"]]
    paid_as_of = windows["paid_date"] <= windows["month_end"]
    days = windows["paid_date"].where(paid_as_of, windows["month_end"]) - windows["due_date"]
    days = days.dt.days
    late = days > 0
    windows = windows.assign(
        late_bills_3m=late & (windows["months_ago"] < 3),
        late_bills_6m=late & (windows["months_ago"] < 6),
        late_bills_12m=late,
        max_days_late_12m=days.clip(lower=0),
        avg_days_paid_after_due_12m=days.where(paid_as_of),
        unpaid_due_bills=~paid_as_of,
    )
    by_row = windows.groupby("index")
    counted = ["late_bills_3m", "late_bills_6m", "late_bills_12m", "unpaid_due_bills"]
    found = (
        by_row[counted]
        .sum()
        .join([by_row["max_days_late_12m"].max(), by_row["avg_days_paid_after_due_12m"].mean()])
    )
    found = found.reindex(grid.index)
    for column in [*counted, "max_days_late_12m"]:
        found[column] = found[column].fillna(0).astype("int64")
    return found


def activity_features(
    raw: dict[str, pd.DataFrame],
    snaps: pd.DataFrame,
    grid: pd.DataFrame,
    attributes: pd.DataFrame,
    settings: dict,
) -> pd.DataFrame:
    """The behaviour, demand and credit features per grid customer-month."""
    known = set(snaps["customer_id"])
    bill, paid = bills(raw), payments(raw)
    monthly = grid[KEYS_BY_MONTH].join(
        monthly_activity(raw, known, bill, paid, attributes.join(grid[KEYS_BY_MONTH]), settings),
        on=KEYS_BY_MONTH,
    )
    monthly["has_arrears"] = (monthly["arrears_yuan"] > 0).astype("int64")
    monthly["billed"] = monthly["bill_yuan"].notna().astype("int64")
    monthly["tou_billed"] = monthly["is_tou_billed"].astype("float64")
    channels = list(settings["pay_channels"].values())
    kinds = list(settings["work_order_kinds"].values())
    summed = [
        "payments",
        *(f"payments_{c}" for c in channels),
        "payments_online",
        "paid_yuan",
        "prepaid_yuan",
        "reversals",
        "work_orders",
        *kinds,
        "rated_orders",
        "satisfaction_points",
        "dissatisfied",
        "outages",
        "outage_minutes",
        "bill_yuan",
        "billed",
        "has_arrears",
    ]
    by_customer = monthly.groupby("customer_id", sort=False)
    s = trailing(by_customer[summed], 12, "sum")
    complaints_3m = trailing(by_customer["complaints"], 3, "sum")
    tou_billed = trailing(by_customer["tou_billed"], 12, "max")
    tariff = by_customer["tariff_code"].ffill(limit=11)

    def total(column: str) -> pd.Series:
        return s[column].fillna(0).astype("int64")

    features = pd.DataFrame(
        {
            "bill_yuan_month": monthly["bill_yuan"],
            "bill_yuan_avg_12m": ratio(s["bill_yuan"], s["billed"]),
            "tariff_code": tariff,
            "is_tou_billed_12m": tou_billed.fillna(0).astype(bool),
            "payments_12m": total("payments"),
            **{f"pay_share_{c}_12m": ratio(s[f"payments_{c}"], s["payments"]) for c in channels},
            "online_pay_share_12m": ratio(s["payments_online"], s["payments"]),
            "prepay_share_12m": ratio(s["prepaid_yuan"].fillna(0), s["paid_yuan"]),
            **{f"{name}_12m": total(name) for name in ["work_orders", *kinds]},
            "complaints_3m": complaints_3m.fillna(0).astype("int64"),
            "satisfaction_avg_12m": ratio(s["satisfaction_points"], s["rated_orders"]),
            "dissatisfied_12m": total("dissatisfied"),
            "outages_12m": total("outages"),
            "outage_minutes_12m": s["outage_minutes"].fillna(0.0),
            "arrears_yuan": monthly["arrears_yuan"].fillna(0.0),
            "arrears_max_days_overdue": monthly["max_days_overdue"]
            .clip(lower=0)
            .fillna(0)
            .astype("int64"),
            "late_fee_yuan": monthly["late_fee_yuan"].fillna(0.0),
            "arrears_months_12m": total("has_arrears"),
            "reversals_12m": total("reversals"),
        }
    )
    return features.join(credit(bill, paid, known, grid))


def customer_features(raw: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """``customer_features`` per customer and month, from its first month of energy to its
    last: the attributes, usage, behaviour, demand and credit features."""
    settings = project_vars()
    snaps = snapshots(raw["archive"])
    usage = usage_features(raw, snaps, settings)
    months = pd.to_datetime(usage["as_of_month"]).dt.to_period("M")
    grid = pd.DataFrame(
        {
            "customer_id": usage["customer_id"],
            "month": months,
            "month_index": month_index(months),
            "month_end": (months + 1).dt.start_time - pd.Timedelta(days=1),
        }
    )
    attributes = attribute_features(snaps, grid)
    activity = activity_features(raw, snaps, grid, attributes, settings)
    return pd.concat([usage, attributes.drop(columns=["tg_id", "is_open"]), activity], axis=1)


KEYS = ["customer_id", "as_of_month"]  # a row of customer_features
# The first month of energy, which pandas' windows start from: what rows can be compared.
WINDOW_START = "first_month"


def disagreements(warehouse: Path, parquet: Path, table: str = "marts.customer_features") -> dict:
    """Compare every feature pandas computed with the platform's table on the customer-months
    whose 12-month window both cover in full (the platform's windows start at the archive's
    first month for the customer, pandas' at its first month of energy): rows compared, the
    features, and per feature the rows that differ (numbers beyond 1e-9 relative)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    # Imported here: run as a script (the timed baseline), this file has no `bench` package on
    # its path, and needs no comparison.
    from bench.floor import differing

    schema = pq.read_schema(parquet)
    features = {
        field.name: pa.types.is_integer(field.type) or pa.types.is_floating(field.type)
        for field in schema
        if field.name not in (*KEYS, WINDOW_START)
    }
    tests = ", ".join(differing(name, numeric) for name, numeric in features.items())
    with duckdb.connect(str(warehouse), read_only=True) as con:
        row = con.execute(
            f"""with platform as (
                    select *, min(as_of_month) over (partition by customer_id) as first_month
                    from {table}
                ),
                y as (select * from read_parquet(?))
                select count(*), {tests}
                from platform x join y using (customer_id, as_of_month)
                where x.as_of_month >= x.first_month + interval 11 month
                  and x.as_of_month >= y.first_month + interval 11 month""",
            [str(parquet)],
        ).fetchone()
    return {
        "rows_compared": row[0],
        "features": list(features),
        "columns": {f: n for f, n in zip(features, row[1:], strict=True) if n},
    }


def main(warehouse: Path, out: Path) -> None:
    customer_features(read_raw(warehouse)).to_parquet(out, index=False)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))

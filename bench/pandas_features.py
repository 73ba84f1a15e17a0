"""The second baseline: what an analyst would write instead — pandas on the raw tables.

It computes the usage features, which cost the platform the most: energy from the cumulative
registers — the total and the four time-of-use periods — with the platform's rules (the latest
extract wins, meter changes, spikes, register wraps, a period step that falls or outruns the
total, gaps spread over their days), then per month and over trailing 12 months, with the
platform's calendar (workdays, public holidays, seasons), each customer's district and its
weather (the degree-day slopes), and the load curves' peak and load factor: ``FEATURES``,
every one of the 22 usage columns of ``customer_features`` and the valley shift. The
platform's feature stage computes all 69 feature columns; pandas only these 23, so the ratio
between them understates the platform's lead.

    python bench/pandas_features.py WAREHOUSE OUT.parquet
"""

from __future__ import annotations

import sys
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

FEATURES = [
    "kwh_month",
    "kwh_12m",
    "months_with_energy_12m",
    "kwh_avg_month_12m",
    "kwh_avg_day_12m",
    "estimated_day_share_12m",
    "tip_share_12m",
    "peak_share_12m",
    "flat_share_12m",
    "valley_share_12m",
    "peak_valley_ratio_12m",
    "daily_cv_12m",
    "summer_ratio_12m",
    "winter_ratio_12m",
    "shoulder_ratio_12m",
    "weekend_weekday_ratio_12m",
    "holiday_ratio_12m",
    "kwh_trend_12m",
    "cooling_slope_kwh_per_c",
    "heating_slope_kwh_per_c",
    "valley_shift_6m",
    "peak_kw_12m",
    "load_factor_12m",
]
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
    "archive": "select CONS_NO, ORG_NO, _period, _source_file, _row_number "
    "from raw.mkt__cons_archive",
    "weather": "select DATE, DISTRICT_CODE, T_MAX, T_MIN, _source_file, _row_number "
    "from raw.ext__weather_daily",
    "districts": "select district_code from staging.districts",
    # Reference data, as the floor reads it: the calendar the platform builds from its rules.
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


def degree_day_bases() -> tuple[float, float]:
    """The cooling and heating degree-days' base temperatures, from the dbt project's vars.
    The project's folder is named here, not imported from orchestration.assets.warehouse,
    whose Dagster imports would count against this timed baseline."""
    import yaml

    project = yaml.safe_load(
        (Path(__file__).parents[1] / "dbt_project/dbt_project.yml").read_text()
    )
    return float(project["vars"]["cooling_base_c"]), float(project["vars"]["heating_base_c"])


def day_context(
    raw: dict[str, pd.DataFrame],
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """What a day's energy is joined with: each customer's district (its latest snapshot's),
    each district's mean temperature per day, and the calendar."""
    archive = latest_per_key(raw["archive"], ["CONS_NO", "_period"])
    archive = archive.assign(customer_id=normalise_cons_no(archive["CONS_NO"]))
    latest = archive.sort_values("_period").drop_duplicates("customer_id", keep="last")
    districts = latest.assign(district_code=latest["ORG_NO"].str[:6])[
        ["customer_id", "district_code"]
    ]
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


def usage_features(raw: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The usage features (``FEATURES``) per customer and month, from the raw tables."""
    days = daily_energy(raw["readings"], raw["changes"])
    districts, weather, calendar = day_context(raw)
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
    cooling_base, heating_base = degree_day_bases()
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
    index = monthly["month"].dt.year * 12 + monthly["month"].dt.month
    x = (index - index.groupby(monthly["customer_id"]).transform("min")).astype("float64")
    x = x.where(monthly["kwh"].notna())
    monthly = monthly.assign(trend_x=x, trend_xx=x * x, trend_xy=x * monthly["kwh"])
    summed = [c for c in monthly.columns if c not in ("customer_id", "month", "peak_kw")]
    by_customer = monthly.groupby("customer_id")
    s = by_customer[summed].rolling(12, min_periods=1).sum().reset_index(level=0, drop=True)
    s6 = (
        by_customer[["rate_kwh", "rate_valley"]]
        .rolling(6, min_periods=1)
        .sum()
        .reset_index(level=0, drop=True)
    )
    peak_kw = (
        by_customer["peak_kw"].rolling(12, min_periods=1).max().reset_index(level=0, drop=True)
    )
    months_with_energy = (
        by_customer["kwh"].rolling(12, min_periods=1).count().reset_index(level=0, drop=True)
    )
    s_kwh = s["kwh"].where(months_with_energy > 0)

    def ratio(a: pd.Series, b: pd.Series) -> pd.Series:
        return a / b.replace(0, np.nan)

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


def disagreements(warehouse: Path, parquet: Path, table: str = "marts.customer_features") -> dict:
    """Compare with the platform's table on the customer-months whose 12-month window both
    cover in full (the platform's windows start at the archive's first month for the customer,
    pandas' at its first month of energy): rows compared, and per feature the rows that differ
    (beyond 1e-9 relative)."""
    # Imported here: run as a script (the timed baseline), this file has no `bench` package on
    # its path, and needs no comparison.
    from bench.floor import differing

    tests = ", ".join(differing(f) for f in FEATURES)
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
        "columns": {f: n for f, n in zip(FEATURES, row[1:], strict=True) if n},
    }


def main(warehouse: Path, out: Path) -> None:
    usage_features(read_raw(warehouse)).to_parquet(out, index=False)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))

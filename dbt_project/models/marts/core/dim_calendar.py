"""One row per day over the years the readings cover: China's public holidays and the
adjusted working days (调休) from the `chinesecalendar` package.

The package knows only the years it was released for; beyond them a day is a rest day when it
falls on a weekend, the row says so (`holiday_source = 'weekend_fallback'`) and the build log
warns, rather than the build failing.
"""

import datetime as dt
import warnings

import polars as pl

SEASONS = {
    12: "winter",
    1: "winter",
    2: "winter",
    6: "summer",
    7: "summer",
    8: "summer",
    9: "summer",
}
HOLIDAY_ZH = {
    "New Year's Day": "元旦",
    "Spring Festival": "春节",
    "Tomb-sweeping Day": "清明节",
    "Labour Day": "劳动节",
    "Dragon Boat Festival": "端午节",
    "National Day": "国庆节",
    "Mid-autumn Festival": "中秋节",
    "Anti-Fascist 70th Day": "抗战胜利70周年纪念日",
}


def _day(day, calendar):
    try:
        on_holiday, name = calendar.get_holiday_detail(day)
        is_workday = calendar.is_workday(day)
        source = "chinese_calendar"
    except NotImplementedError:
        on_holiday, name, is_workday, source = False, None, day.weekday() < 5, "weekend_fallback"
    return {
        "calendar_date": day,
        "year": day.year,
        "month_start": day.replace(day=1),
        "iso_day_of_week": day.isoweekday(),
        "is_weekend": day.weekday() >= 5,
        "is_workday": is_workday,
        "is_public_holiday": bool(on_holiday and name),
        "is_adjusted_workday": is_workday and day.weekday() >= 5,
        "holiday_name_en": name if on_holiday else None,
        "holiday_name_zh": HOLIDAY_ZH.get(name) if on_holiday else None,
        "season": SEASONS.get(day.month, "shoulder"),
        "holiday_source": source,
    }


def model(dbt, session):
    dbt.config(materialized="table")
    import chinese_calendar

    # The raw table, not the staging view: its span is the same, and the view's de-duplication
    # over every reading cost ~20 s at 10,000 accounts for two dates.
    first, last = (
        dbt.source("raw", "ami__daily_reading")
        .aggregate("min(DATA_DATE), max(DATA_DATE)")
        .fetchone()
    )
    today = dt.date.today()
    start = dt.date((first or today).year, 1, 1)
    end = dt.date((last or today).year, 12, 31)
    days = [start + dt.timedelta(k) for k in range((end - start).days + 1)]
    rows = [_day(d, chinese_calendar) for d in days]
    fallback = sorted({r["year"] for r in rows if r["holiday_source"] == "weekend_fallback"})
    if fallback:
        warnings.warn(
            f"dim_calendar: chinese_calendar has no holidays for {fallback}; weekends only",
            stacklevel=1,
        )
    return pl.DataFrame(rows)

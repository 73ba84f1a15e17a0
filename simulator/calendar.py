"""Months, days, the Chinese holiday calendar and Wuhan's weather, as the simulator sees them."""

from __future__ import annotations

import datetime as dt
import warnings
from dataclasses import dataclass

import chinese_calendar
import numpy as np

# District code → (name, is_rural, temperature offset °C).
DISTRICTS: dict[str, tuple[str, bool, float]] = {
    "420102": ("江岸", False, 0.3),
    "420103": ("江汉", False, 0.4),
    "420104": ("硚口", False, 0.3),
    "420105": ("汉阳", False, 0.2),
    "420106": ("武昌", False, 0.4),
    "420107": ("青山", False, 0.2),
    "420111": ("洪山", False, 0.0),
    "420112": ("东西湖", True, -0.2),
    "420113": ("汉南", True, -0.3),
    "420114": ("蔡甸", True, -0.3),
    "420115": ("江夏", True, -0.4),
    "420116": ("黄陂", True, -0.6),
    "420117": ("新洲", True, -0.5),
}
DISTRICT_CODES = tuple(DISTRICTS)
# Where accounts live: the central districts are denser.
DISTRICT_WEIGHTS = np.array([10, 9, 8, 8, 12, 6, 12, 6, 2, 4, 7, 6, 5], dtype=float)
DISTRICT_WEIGHTS /= DISTRICT_WEIGHTS.sum()


def month_add(ym: int, k: int) -> int:
    """``YYYYMM`` plus ``k`` months."""
    y, m = divmod(ym // 100 * 12 + ym % 100 - 1 + k, 12)
    return y * 100 + m + 1


def month_range(end: int, months: int) -> list[int]:
    """The ``months`` business months ending with ``end``, oldest first."""
    return [month_add(end, k) for k in range(-months + 1, 1)]


def month_days(ym: int) -> list[dt.date]:
    first = dt.date(ym // 100, ym % 100, 1)
    nxt = month_add(ym, 1)
    last = dt.date(nxt // 100, nxt % 100, 1)
    return [first + dt.timedelta(d) for d in range((last - first).days)]


def first_of(ym: int) -> dt.date:
    return dt.date(ym // 100, ym % 100, 1)


@dataclass(frozen=True)
class DayKind:
    weekend_or_holiday: bool
    spring_festival: bool
    holiday: bool


_warned: set[int] = set()


def day_kind(day: dt.date) -> DayKind:
    """Whether a day is a rest day, and whether it is in the Spring Festival holiday.

    The holiday package knows only the years it was released for; beyond them the simulator
    falls back to plain weekends, with a warning, rather than failing.
    """
    try:
        on_holiday, name = chinese_calendar.get_holiday_detail(day)
        rest = not chinese_calendar.is_workday(day)
        return DayKind(
            rest,
            name == chinese_calendar.Holiday.spring_festival.value,
            on_holiday and name is not None,
        )
    except NotImplementedError:
        if day.year not in _warned:
            _warned.add(day.year)
            warnings.warn(
                f"chinese_calendar has no holidays for {day.year}: using weekends only",
                stacklevel=2,
            )
        return DayKind(day.weekday() >= 5, False, False)


def weather(days: list[dt.date], rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Daily (t_max, t_min, precip_mm) arrays of shape (districts, days) for Wuhan.

    A seasonal sine with a hot, humid July (max ≈ 34 °C) and a cold January (min ≈ 1 °C), a
    persistent (AR(1)) anomaly shared by the city, small district offsets, and a plum-rain season
    in June and July.
    """
    doy = np.array([d.timetuple().tm_yday for d in days], dtype=float)
    mean = 17.0 + 12.5 * np.sin(2 * np.pi * (doy - 115.0) / 365.25)
    anomaly = np.zeros(len(days))
    shocks = rng.normal(0.0, 1.6, len(days))
    for i in range(1, len(days)):
        anomaly[i] = 0.75 * anomaly[i - 1] + shocks[i]
    offsets = np.array([DISTRICTS[c][2] for c in DISTRICT_CODES])[:, None]
    t_mean = (
        mean[None, :] + anomaly[None, :] + offsets + rng.normal(0, 0.3, (len(offsets), len(days)))
    )
    spread = 7.5 + rng.normal(0, 1.0, t_mean.shape)
    t_max = np.round(t_mean + spread / 2, 1)
    t_min = np.round(t_mean - spread / 2, 1)
    month = np.array([d.month for d in days])
    wet = np.where(
        (month >= 6) & (month <= 7), 0.45, np.where((month >= 3) & (month <= 9), 0.3, 0.15)
    )
    rain = rng.random(t_mean.shape) < wet[None, :]
    precip = np.round(np.where(rain, rng.gamma(0.8, 12.0, t_mean.shape), 0.0), 1)
    return t_max, t_min, precip

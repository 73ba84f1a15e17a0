"""Latent customer archetypes of a Wuhan city branch.

Each account is drawn from one archetype; its energy, tariff, payments, work orders and risk all
follow from the archetype's parameters plus per-account noise, so that the extracts agree with
one another the way a real customer's records do. The truth folder records the archetype and
the business segment each one is meant to fall in.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

SEGMENTS = ("high_value_stable", "growth_potential", "basic_need", "special_care", "high_risk")


@dataclass(frozen=True)
class Archetype:
    name: str
    share: float  # of all accounts
    elec_type: str  # ELEC_TYPE_CODE
    segment: str  # business segment it is meant to fall in
    kwh_day: float  # median daily energy, kWh
    kwh_sigma: float  # spread of the daily median across accounts (lognormal sigma)
    cool: float  # relative rise per °C of daily mean temperature above 24 °C
    heat: float  # relative rise per °C below 14 °C
    weekend: float  # weekend / weekday energy
    spring_festival: float  # energy during the Spring Festival holiday / normal
    growth: float  # monthly growth of energy
    tou_prob: float  # probability of a time-of-use tariff
    profile: tuple[float, float, float, float]  # tip, peak, flat, valley energy shares
    noise: float  # day-to-day lognormal sigma
    curve: str  # intraday load shape (for load curves)
    risk0: float  # latent log-odds of a bill going 30+ days past due, at the start
    risk_drift: float  # monthly drift of that log-odds
    late_base: float  # share of bills paid 1-29 days late for a risk-free account
    online: float  # share of payments through app / WeChat / Alipay
    prepay: float  # share of payments that are prepayments
    orders: float  # work orders a month
    complaint: float  # share of work orders that are complaints
    special: tuple[tuple[str, float], ...] = (("0", 1.0),)  # SPECIAL_FLAG distribution
    birth: tuple[int, int] = (1960, 1995)  # birth years of residential holders
    cap: tuple[float, float] = (8.0, 12.0)  # contract capacity kVA range
    volt: str = "AC02202"
    agri_season: bool = False
    rising_from: float = 0.0  # share of the window after which growth starts (EV bought)


_RES_PROFILE = (0.05, 0.35, 0.32, 0.28)

ARCHETYPES: tuple[Archetype, ...] = (
    Archetype(
        "family",
        0.52,
        "100",
        "basic_need",
        7.5,
        0.35,
        0.09,
        0.045,
        1.08,
        1.10,
        0.001,
        0.12,
        _RES_PROFILE,
        0.25,
        "home",
        -5.0,
        0.0,
        0.06,
        0.55,
        0.05,
        0.020,
        0.08,
    ),
    Archetype(
        "elderly_alone",
        0.07,
        "100",
        "special_care",
        3.2,
        0.30,
        0.04,
        0.07,
        1.0,
        1.35,
        0.0,
        0.04,
        (0.03, 0.30, 0.37, 0.30),
        0.22,
        "home",
        -5.2,
        0.0,
        0.04,
        0.10,
        0.02,
        0.030,
        0.05,
        (("3", 0.8), ("1", 0.2)),
        (1932, 1956),
        (4.0, 6.0),
    ),
    Archetype(
        "low_income",
        0.03,
        "100",
        "special_care",
        4.2,
        0.30,
        0.06,
        0.05,
        1.05,
        1.10,
        0.0,
        0.05,
        _RES_PROFILE,
        0.25,
        "home",
        -4.0,
        0.0,
        0.15,
        0.30,
        0.08,
        0.025,
        0.10,
        (("1", 0.6), ("2", 0.4)),
        (1950, 1990),
        (4.0, 8.0),
    ),
    Archetype(
        "tou_household",
        0.11,
        "100",
        "growth_potential",
        10.5,
        0.30,
        0.09,
        0.04,
        1.10,
        1.05,
        0.002,
        0.95,
        (0.03, 0.24, 0.28, 0.45),
        0.25,
        "home_valley",
        -5.2,
        0.0,
        0.04,
        0.80,
        0.08,
        0.020,
        0.06,
    ),
    Archetype(
        "ev_household",
        0.05,
        "100",
        "growth_potential",
        15.0,
        0.25,
        0.07,
        0.035,
        1.15,
        1.0,
        0.020,
        0.90,
        (0.02, 0.20, 0.24, 0.54),
        0.30,
        "home_ev",
        -5.3,
        0.0,
        0.03,
        0.90,
        0.10,
        0.025,
        0.05,
        birth=(1975, 1998),
        cap=(10.0, 16.0),
        rising_from=0.3,
    ),
    Archetype(
        "vacant_home",
        0.07,
        "100",
        "basic_need",
        0.6,
        0.60,
        0.01,
        0.01,
        1.0,
        1.6,
        0.0,
        0.05,
        (0.02, 0.25, 0.40, 0.33),
        0.60,
        "home",
        -4.6,
        0.0,
        0.12,
        0.60,
        0.30,
        0.004,
        0.05,
    ),
    Archetype(
        "sliding_household",
        0.05,
        "100",
        "high_risk",
        6.0,
        0.35,
        0.08,
        0.04,
        1.06,
        1.1,
        0.0,
        0.08,
        _RES_PROFILE,
        0.25,
        "home",
        -3.4,
        0.13,
        0.30,
        0.40,
        0.02,
        0.030,
        0.20,
        birth=(1965, 1995),
    ),
    Archetype(
        "shop",
        0.035,
        "200",
        "high_value_stable",
        55.0,
        0.55,
        0.05,
        0.02,
        1.15,
        0.45,
        0.0,
        0.85,
        (0.10, 0.45, 0.33, 0.12),
        0.18,
        "shop",
        -4.8,
        0.0,
        0.08,
        0.50,
        0.02,
        0.030,
        0.10,
        cap=(15.0, 60.0),
        volt="AC03802",
    ),
    Archetype(
        "office",
        0.015,
        "200",
        "high_value_stable",
        260.0,
        0.60,
        0.06,
        0.03,
        0.35,
        0.25,
        0.0,
        0.95,
        (0.12, 0.50, 0.30, 0.08),
        0.12,
        "office",
        -5.6,
        0.0,
        0.03,
        0.30,
        0.0,
        0.040,
        0.05,
        cap=(100.0, 630.0),
        volt="AC00101",
    ),
    Archetype(
        "factory_1shift",
        0.012,
        "200",
        "high_value_stable",
        420.0,
        0.60,
        0.01,
        0.01,
        0.45,
        0.15,
        0.0,
        0.95,
        (0.10, 0.52, 0.33, 0.05),
        0.12,
        "shift1",
        -5.3,
        0.0,
        0.05,
        0.20,
        0.0,
        0.050,
        0.06,
        cap=(200.0, 800.0),
        volt="AC00101",
    ),
    Archetype(
        "factory_2shift",
        0.008,
        "300",
        "high_value_stable",
        2600.0,
        0.60,
        0.01,
        0.01,
        0.80,
        0.20,
        0.0,
        1.0,
        (0.12, 0.42, 0.33, 0.13),
        0.10,
        "shift2",
        -5.6,
        0.0,
        0.03,
        0.10,
        0.0,
        0.060,
        0.05,
        cap=(630.0, 3150.0),
        volt="AC00101",
    ),
    Archetype(
        "factory_3shift",
        0.005,
        "300",
        "high_value_stable",
        9000.0,
        0.60,
        0.005,
        0.005,
        0.95,
        0.55,
        0.0,
        1.0,
        (0.08, 0.30, 0.32, 0.30),
        0.06,
        "shift3",
        -5.8,
        0.0,
        0.02,
        0.10,
        0.0,
        0.080,
        0.04,
        cap=(2000.0, 12500.0),
        volt="AC00351",
    ),
    Archetype(
        "agri_irrigation",
        0.010,
        "400",
        "basic_need",
        28.0,
        0.50,
        0.00,
        0.00,
        1.0,
        0.3,
        0.0,
        0.0,
        (0.0, 0.30, 0.40, 0.30),
        0.35,
        "pump",
        -4.6,
        0.0,
        0.10,
        0.20,
        0.05,
        0.015,
        0.05,
        cap=(10.0, 50.0),
        volt="AC03802",
        agri_season=True,
    ),
    Archetype(
        "growing_business",
        0.010,
        "200",
        "growth_potential",
        70.0,
        0.50,
        0.05,
        0.02,
        0.85,
        0.30,
        0.035,
        0.80,
        (0.10, 0.46, 0.32, 0.12),
        0.15,
        "office",
        -5.0,
        0.0,
        0.05,
        0.60,
        0.0,
        0.040,
        0.06,
        cap=(30.0, 200.0),
        volt="AC03802",
    ),
    Archetype(
        "sliding_business",
        0.005,
        "200",
        "high_risk",
        90.0,
        0.50,
        0.04,
        0.02,
        1.0,
        0.4,
        -0.01,
        0.70,
        (0.10, 0.45, 0.33, 0.12),
        0.18,
        "shop",
        -3.1,
        0.14,
        0.35,
        0.40,
        0.0,
        0.040,
        0.25,
        cap=(20.0, 100.0),
        volt="AC03802",
    ),
)

CURVE_SHAPES = (
    "home",
    "home_valley",
    "home_ev",
    "shop",
    "office",
    "shift1",
    "shift2",
    "shift3",
    "pump",
)


@functools.cache
def attribute(name: str) -> np.ndarray:
    """One attribute of every archetype, indexed by archetype number.

    ``attribute("cool")[pop.archetype]`` gives each account its archetype's value in one
    vectorised step (tuple attributes come back as 2-D arrays).
    """
    return np.array([getattr(a, name) for a in ARCHETYPES])


def by_name() -> dict[str, Archetype]:
    return {a.name: a for a in ARCHETYPES}


def _check() -> None:
    total = sum(a.share for a in ARCHETYPES)
    if abs(total - 1.0) > 1e-9:
        raise ValueError(f"archetype shares add up to {total}, not 1")
    for a in ARCHETYPES:
        if a.segment not in SEGMENTS or a.curve not in CURVE_SHAPES:
            raise ValueError(f"archetype {a.name}: unknown segment or curve")
        if abs(sum(a.profile) - 1.0) > 1e-9:
            raise ValueError(f"archetype {a.name}: profile shares do not add up to 1")


_check()

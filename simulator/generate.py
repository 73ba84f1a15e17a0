"""Month-by-month simulation of the six source systems from one latent population.

Each month produces the tables of every extract as polars DataFrames whose columns are the
contract's (``data_contracts``), plus the row-level defects. Energy drives bills; bills and the
latent risk drive payments and arrears; outages drive repair orders; all from one seed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from simulator.archetypes import ARCHETYPES, attribute
from simulator.calendar import (
    DISTRICT_CODES,
    DISTRICTS,
    day_kind,
    month_add,
    month_days,
    weather,
)
from simulator.defects import DefectRates
from simulator.population import WRAP_NONE, Population

_SHANGHAI = dt.timezone(dt.timedelta(hours=8))
_EPOCH = dt.date(1970, 1, 1)

# The daily readings and the load curves are built this many accounts at a time: their
# day-by-day arrays (a register and four rate registers a day, or 96 points a day) built for
# 1,000,000 accounts at once took the simulator's peak to 15.7 GiB (5 months; 8.9 GiB in
# blocks). Up to these sizes (100,000 accounts: ~9,000 with curves) a drop is one block, byte
# for byte what it was before the blocks.
ACCOUNT_BLOCK = 250_000
CURVE_BLOCK = 16_000


def _blocks(n: int, size: int) -> list[slice]:
    """Consecutive slices of at most ``size`` covering ``range(n)``; one (empty) when n = 0."""
    return [slice(i, i + size) for i in range(0, max(n, 1), size)]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _curve_shapes() -> dict[str, np.ndarray]:
    """96-point intraday weights (summing to 1) per load shape."""
    h = np.arange(96) / 4.0

    def bump(center: float, width: float) -> np.ndarray:
        return np.exp(-0.5 * ((h - center) / width) ** 2)

    def window(start: float, end: float) -> np.ndarray:
        return ((h >= start) & (h < end)).astype(float)

    raw = {
        "home": 0.3 + bump(7.5, 1.0) * 0.6 + bump(20.0, 2.0) * 1.4,
        "home_valley": 0.4 + bump(20.0, 2.0) * 0.8 + window(0, 7) * 0.9,
        "home_ev": 0.3 + bump(20.0, 2.0) * 0.9 + window(0, 6) * 2.0,
        "shop": 0.15 + window(9, 22) * 1.0 + bump(19.0, 1.5) * 0.3,
        "office": 0.12 + window(8, 18.5) * 1.0,
        "shift1": 0.08 + window(8, 17) * 1.0,
        "shift2": 0.10 + window(7, 23) * 1.0,
        "shift3": 0.85 + window(8, 20) * 0.15,
        "pump": 0.05 + window(6, 18) * 1.0,
    }
    return {k: v / v.sum() for k, v in raw.items()}


@dataclass
class MonthTables:
    """Everything the source systems drop for one business month: (extract name, table) pairs,
    each built when it is asked for, so that a writer holds one month's table at a time. A
    month's tables are to be taken in order, and all of them before the next month's."""

    period: int
    tables: Iterator[tuple[str, pl.DataFrame]]


@dataclass
class _State:
    cum_cents: np.ndarray  # energy since the window start, per account
    rate_cum: np.ndarray  # per account × 4 rate registers
    offset: np.ndarray  # register = init + cum - offset (mod wrap)
    rate_offset: np.ndarray
    wrap: np.ndarray
    has_rate: np.ndarray
    meter_no: np.ndarray
    shares: np.ndarray  # per account × 4 time-of-use shares
    bills: list[dict[str, np.ndarray]] = field(default_factory=list)
    pending_pay: list[pl.DataFrame] = field(default_factory=list)
    pending_orders: list[pl.DataFrame] = field(default_factory=list)
    pay_seq: int = 0
    order_seq: int = 0
    outage_seq: int = 0


class Simulation:
    """Iterate months of extracts for a population; the truth comes from ``truth()``."""

    def __init__(
        self,
        pop: Population,
        months: list[int],
        rng: np.random.Generator,
        defects: DefectRates,
        account_block: int = ACCOUNT_BLOCK,
        curve_block: int = CURVE_BLOCK,
    ) -> None:
        self.pop = pop
        self.account_block, self.curve_block = account_block, curve_block
        self.months = months
        self.rng = rng
        self.d = defects
        self.shapes = _curve_shapes()
        n = pop.n
        a_idx = pop.archetype
        prof = attribute("profile")[a_idx]
        shares = prof * rng.uniform(0.8, 1.2, (n, 4))
        shares /= shares.sum(axis=1, keepdims=True)
        wrap = pop.wrap_cents.copy()
        init = pop.reg_init_cents.copy()
        # Rollover: some old meters start close to their wrap value.
        roll = (wrap < WRAP_NONE) & (rng.random(n) < defects.rollover)
        init[roll] = wrap[roll] - rng.integers(5_000, 200_000, roll.sum())
        self.reg_init = init
        rate_init = np.round(init[:, None] * shares).astype(np.int64)
        rate_init[:, 2] = init - rate_init[:, [0, 1, 3]].sum(axis=1)
        self.s = _State(
            cum_cents=np.zeros(n, np.int64),
            rate_cum=np.zeros((n, 4), np.int64),
            offset=np.zeros(n, np.int64),
            rate_offset=-rate_init,
            wrap=wrap,
            has_rate=pop.has_rate_regs.copy(),
            meter_no=np.ones(n, np.int64),
            shares=shares,
        )
        self.all_days = [d for m in months for d in month_days(m)]
        t_max, t_min, precip = weather(self.all_days, rng)
        self.t_max, self.t_min, self.precip = t_max, t_min, precip
        self.day_index = {d: i for i, d in enumerate(self.all_days)}
        # Latent risk trajectory per account and month (plus 3 months after the end).
        steps = np.arange(len(months) + 3)
        self.risk = (
            pop.risk0[:, None]
            + pop.risk_drift[:, None] * steps[None, :]
            + rng.normal(0, 0.25, (n, len(steps)))
        )
        self.orphans = np.array(
            [f"{v:010d}" for v in rng.integers(3_000_000_000, 9_999_999_999, max(5, n // 200))]
        )
        self.meter_ids = np.array([f"33{i:07d}" for i in range(n)])
        self.archive_text = self._archive_text()
        self.defect_log: dict[str, int] = {}
        self.energy_log: list[pl.DataFrame] = []

    # ----------------------------------------------------------------------------------------
    def _log(self, kind: str, count: int) -> None:
        if count:
            self.defect_log[kind] = self.defect_log.get(kind, 0) + int(count)

    def _hits(
        self,
        shape: int | tuple[int, ...],
        rate: float,
        kind: str,
        eligible: np.ndarray | None = None,
    ) -> np.ndarray:
        """Where a row-level defect strikes: each eligible row with probability ``rate``.

        A non-zero rate strikes at least once per drop (at its first chance), so that even a
        small drop carries every defect; the count goes to the truth's defect log.
        """
        hits = self.rng.random(shape) < rate
        if eligible is not None:
            hits &= eligible
        if rate > 0 and not hits.any() and kind not in self.defect_log:
            candidates = np.flatnonzero(np.ones(shape, bool) if eligible is None else eligible)
            if len(candidates):
                hits.flat[self.rng.choice(candidates)] = True
        self._log(kind, int(hits.sum()))
        return hits

    def _meter_id(self, idx: np.ndarray) -> np.ndarray:
        return np.char.add(self.meter_ids[idx], np.char.zfill(self.s.meter_no[idx].astype(str), 2))

    def __iter__(self) -> Iterator[MonthTables]:
        for t, ym in enumerate(self.months):
            yield self._month(t, ym)

    # ----------------------------------------------------------------------------------------
    def _month(self, t: int, ym: int) -> MonthTables:
        return MonthTables(ym, self._tables(t, ym))

    def _tables(self, t: int, ym: int) -> Iterator[tuple[str, pl.DataFrame]]:
        pop = self.pop
        days = month_days(ym)
        active = np.flatnonzero((pop.open_month <= t) & (pop.close_month > t))
        di = np.array([self.day_index[d] for d in days])
        kinds = [day_kind(d) for d in days]

        energy = self._energy(t, ym, active, di, kinds)  # cents, shape (active, days)
        self.energy_log.append(
            pl.DataFrame(
                {
                    "cons_no": self.pop.cons_no[active],
                    "month": ym,
                    "kwh": energy.sum(axis=1) / 100.0,
                },
                schema={"cons_no": pl.String, "month": pl.Int32, "kwh": pl.Float64},
            )
        )
        reading, changes = self._readings(active, days, energy)
        yield "ami__daily_reading", reading
        del reading
        yield "ami__meter_change", changes
        yield "ami__load_curve", self._load_curve(active, days, energy)
        yield "mkt__cons_archive", self._archive(t, ym)
        yield "mkt__monthly_bill", self._bills(t, ym, active, energy)
        yield "fin__payment", self._payments(ym)
        yield "fin__arrears", self._arrears(ym)
        outages = self._outages(ym, days)
        yield "om__outage", outages
        yield "crm__work_order", self._work_orders(t, ym, days, active, outages)
        yield "ext__weather_daily", self._weather(days, di)
        yield "ext__economy_monthly", self._economy(t, ym)

    def _energy(
        self, t: int, ym: int, active: np.ndarray, di: np.ndarray, kinds: list
    ) -> np.ndarray:
        pop, rng = self.pop, self.rng
        arch = pop.archetype[active]
        cool = attribute("cool")[arch][:, None]
        heat = attribute("heat")[arch][:, None]
        weekend = attribute("weekend")[arch][:, None]
        festival = attribute("spring_festival")[arch][:, None]
        noise = attribute("noise")[arch][:, None]
        growth = attribute("growth")[arch]
        rising = attribute("rising_from")[arch]
        start = rising * len(self.months)
        months_grown = np.clip(t - start, 0, None)
        trend = (1.0 + growth) ** months_grown
        temp = ((self.t_max + self.t_min) / 2.0)[pop.district[active]][:, di]
        season = 1.0 + cool * np.clip(temp - 24.0, 0, None) + heat * np.clip(14.0 - temp, 0, None)
        rest = np.array([k.weekend_or_holiday for k in kinds])[None, :]
        sf = np.array([k.spring_festival for k in kinds])[None, :]
        day_factor = np.where(sf, festival, np.where(rest, weekend, 1.0))
        agri = attribute("agri_season")[arch][:, None]
        month = ym % 100
        agri_factor = {
            1: 0.2,
            2: 0.2,
            3: 0.5,
            4: 1.2,
            5: 1.8,
            6: 2.2,
            7: 2.8,
            8: 2.6,
            9: 1.6,
            10: 0.8,
            11: 0.3,
            12: 0.2,
        }[month]
        season = np.where(agri, agri_factor, season)
        mean = (pop.base_kwh[active] * trend)[:, None] * season * day_factor
        kwh = mean * np.exp(rng.normal(-0.5 * noise**2, noise, mean.shape))
        return np.round(kwh * 100).astype(np.int64)

    def _readings(
        self, active: np.ndarray, days: list[dt.date], energy: np.ndarray
    ) -> tuple[pl.DataFrame, pl.DataFrame]:
        """The month's daily readings (with a few orphan copies) and meter changes."""
        frames, change_rows = [], []
        for block in _blocks(len(active), self.account_block):
            frame, rows = self._reading_block(active[block], days, energy[block])
            frames.append(frame)
            change_rows.extend(rows)
        frame = pl.concat(frames)
        orphan = self._orphan_rows(frame, "CONS_NO", "orphan:ami")
        orphan = orphan.with_columns(("39" + pl.col("CONS_NO").str.slice(1)).alias("METER_ID"))
        changes = pl.DataFrame(
            change_rows,
            schema={
                "CONS_NO": pl.String,
                "OLD_METER_ID": pl.String,
                "NEW_METER_ID": pl.String,
                "CHANGE_DATE": pl.Date,
                "OLD_FINAL_R": pl.Float64,
                "NEW_INIT_R": pl.Float64,
            },
        )
        return pl.concat([frame, orphan]), changes

    def _reading_block(
        self, active: np.ndarray, days: list[dt.date], energy: np.ndarray
    ) -> tuple[pl.DataFrame, list[dict]]:
        """The readings of the accounts ``active`` (their energy: ``energy``), and the meter
        changes among them as rows."""
        s, rng, d = self.s, self.rng, self.d
        n_act, n_days = energy.shape
        cum = s.cum_cents[active][:, None] + np.cumsum(energy, axis=1)
        rate_e = np.round(energy[:, :, None] * s.shares[active][:, None, :]).astype(np.int64)
        rate_e[:, :, 2] = energy - rate_e[:, :, [0, 1, 3]].sum(axis=2)  # flat takes the rest
        rate_cum = s.rate_cum[active][:, None, :] + np.cumsum(rate_e, axis=1)
        init = self.reg_init[active][:, None]
        reg = (init + cum - s.offset[active][:, None]) % s.wrap[active][:, None]
        rate_reg = rate_cum - s.rate_offset[active][:, None, :]
        # Which meter of its account read each day: numbers, not 3M strings, until the frame.
        meter_no = np.repeat(s.meter_no[active][:, None], n_days, axis=1)

        # Meter changes: on day c the old meter is read out, the new one starts near zero.
        change_rows = []
        changed = np.flatnonzero(self._hits(n_act, d.meter_change, "meter_change"))
        for k in changed:
            i = active[k]
            c = int(rng.integers(1, n_days))
            part = int(energy[k, c] * rng.uniform(0.2, 0.8))
            at_change = cum[k, c - 1] + part
            old_final = (self.reg_init[i] + at_change - s.offset[i]) % s.wrap[i]
            new_init = int(rng.integers(0, 300))
            old_id = self._meter_id(np.array([i]))[0]
            s.meter_no[i] += 1
            new_id = self._meter_id(np.array([i]))[0]
            s.offset[i] = self.reg_init[i] + at_change - new_init
            s.wrap[i] = WRAP_NONE
            s.has_rate[i] = True
            rate_at = rate_cum[k, c - 1, :] + (rate_e[k, c, :] * part) // max(energy[k, c], 1)
            s.rate_offset[i] = rate_at
            reg[k, c:] = (self.reg_init[i] + cum[k, c:] - s.offset[i]) % s.wrap[i]
            rate_reg[k, c:, :] = rate_cum[k, c:, :] - s.rate_offset[i]
            meter_no[k, c:] = s.meter_no[i]
            change_rows.append(
                {
                    "CONS_NO": self.pop.cons_no[i],
                    "OLD_METER_ID": old_id,
                    "NEW_METER_ID": new_id,
                    "CHANGE_DATE": days[c],
                    "OLD_FINAL_R": old_final / 100.0,
                    "NEW_INIT_R": new_init / 100.0,
                }
            )
        self._log(
            "rollover",
            int(
                ((init[:, 0] + cum[:, -1] - s.offset[active]) >= s.wrap[active]).sum()
                - ((init[:, 0] + cum[:, 0] - s.offset[active]) >= s.wrap[active]).sum()
            ),
        )
        s.cum_cents[active] = cum[:, -1]
        s.rate_cum[active] = rate_cum[:, -1, :]

        pap = reg.astype(np.float64) / 100.0
        # Spikes: one reading far off, the next back.
        days_ = np.arange(n_days)[None, :]
        spike = self._hits(pap.shape, d.spike, "spike", eligible=days_ < n_days - 1)
        pap[spike] = pap[spike] * 3.0 + 5000.0
        # A month never starts with a gap, so gaps stay inside one file.
        keep = ~self._hits(pap.shape, d.missing_day, "missing_day", eligible=days_ > 0)
        has_rate = s.has_rate[active][:, None] | np.zeros((1, n_days), bool)
        rr = np.where(has_rate[:, :, None], rate_reg / 100.0, np.nan)
        acc = np.repeat(np.arange(n_act)[:, None], n_days, axis=1)
        day_idx = np.repeat(np.arange(n_days)[None, :], n_act, axis=0)
        sel = keep.ravel()
        date_series = pl.Series([days[i] for i in range(n_days)], dtype=pl.Date)
        coll_sec = rng.integers(60, 3 * 3600, sel.sum())
        frame = pl.DataFrame(
            {
                "METER_ID": pl.Series(self.meter_ids[active]).gather(acc.ravel()[sel])
                + pl.Series(meter_no.ravel()[sel]).cast(pl.String).str.zfill(2),
                "CONS_NO": pl.Series(self.pop.cons_no[active]).gather(acc.ravel()[sel]),
                "DATA_DATE": date_series.gather(day_idx.ravel()[sel]),
                "PAP_R": pap.ravel()[sel],
                **{f"PAP_R{r + 1}": rr[:, :, r].ravel()[sel] for r in range(4)},
            }
        )
        frame = frame.with_columns(
            [pl.col(f"PAP_R{r}").fill_nan(None) for r in range(1, 5)]
            + [
                (
                    pl.col("DATA_DATE").cast(pl.Datetime("us"))
                    + pl.duration(days=1)
                    + pl.duration(seconds=pl.Series(coll_sec))
                ).alias("COLL_TIME")
            ]
        )
        return frame, change_rows

    def _orphan_rows(self, frame: pl.DataFrame, col: str, kind: str) -> pl.DataFrame:
        """Copies of a few rows re-keyed to accounts that no archive knows.

        The caller gives them their own identifiers (payment number, meter): an unknown
        account's rows are its own, never a second version of a known account's row.
        """
        k = int(self._hits(len(frame), self.d.orphan, kind).sum())
        if k == 0:
            return frame.clear()
        rows = frame.sample(k, seed=int(self.rng.integers(2**31)))
        return rows.with_columns(pl.Series(col, self.rng.choice(self.orphans, k)))

    def _load_curve(
        self, active: np.ndarray, days: list[dt.date], energy: np.ndarray
    ) -> pl.DataFrame:
        arch = self.pop.archetype[active]
        is_curve = np.isin(attribute("elec_type")[arch], ["200", "300"])
        k_idx = np.flatnonzero(is_curve)
        if len(k_idx) == 0:
            cols = {"METER_ID": pl.String, "CONS_NO": pl.String, "DATA_DATE": pl.Date}
            return pl.DataFrame(schema=cols | {f"P{i}": pl.Float64 for i in range(1, 97)})
        frames = [
            self._curve_block(active, days, energy, k_idx[block])
            for block in _blocks(len(k_idx), self.curve_block)
        ]
        return pl.concat(frames)

    def _curve_block(
        self, active: np.ndarray, days: list[dt.date], energy: np.ndarray, k_idx: np.ndarray
    ) -> pl.DataFrame:
        """The 96-point curves of the accounts ``active[k_idx]``."""
        pop, rng = self.pop, self.rng
        n_days = len(days)
        rows = len(k_idx) * n_days
        curves = attribute("curve")[pop.archetype[active[k_idx]]]
        shape = np.stack([self.shapes[c] for c in curves])  # (k, 96)
        kwh = energy[k_idx].astype(np.float64) / 100.0  # (k, days)
        power = kwh[:, :, None] * shape[:, None, :] * 4.0
        # 30M draws a month at 100k accounts: single precision is plenty for ±5 % noise.
        power *= 1.0 + 0.05 * rng.standard_normal(power.shape, dtype=np.float32)
        power = np.round(np.clip(power, 0, None), 3).reshape(rows, 96)
        power[rng.random(power.shape, dtype=np.float32) < 0.002] = np.nan
        power = np.asfortranarray(power)  # each P column contiguous for the frame below
        acc = np.repeat(k_idx, n_days)
        meter = self._meter_id(active[acc])
        return pl.DataFrame(
            {
                "METER_ID": meter,
                "CONS_NO": pop.cons_no[active[acc]],
                "DATA_DATE": pl.Series(days, dtype=pl.Date).gather(
                    np.tile(np.arange(n_days), len(k_idx))
                ),
                **{f"P{i + 1}": pl.Series(power[:, i], nan_to_null=True) for i in range(96)},
            }
        )

    def _archive(self, t: int, ym: int) -> pl.DataFrame:
        pop = self.pop
        idx = np.flatnonzero(pop.open_month <= t)
        arch = pop.archetype[idx]
        closed = pop.close_month[idx] <= t
        status = np.where(closed, "9", "1")
        vacant = attribute("name")[arch] == "vacant_home"
        status = np.where(
            ~closed & vacant & (pop.cons_no[idx].astype(np.int64) % 5 == 0), "2", status
        )
        tou = pop.tou[idx] | ((pop.tou_switch[idx] >= 0) & (pop.tou_switch[idx] <= t))
        etype = attribute("elec_type")[arch]
        volt = attribute("volt")[arch]
        return pl.DataFrame(
            {
                "CONS_NO": pop.cons_no[idx],
                "CONS_NAME": self.archive_text["name"].gather(idx),
                "ELEC_TYPE_CODE": etype,
                "VOLT_CODE": volt,
                "TRADE_CODE": pop.trade_code[idx],
                "STATUS_CODE": status,
                "CONTRACT_CAP": pop.contract_cap[idx],
                "ORG_NO": pop.org_no[idx],
                "TG_ID": pop.tg_id[idx],
                "ADDR": self.archive_text["addr"].gather(idx),
                "MOBILE": self.archive_text["mobile"].gather(idx),
                "CERT_NO": self.archive_text["cert_no"].gather(idx),
                "SPECIAL_FLAG": pop.special_flag[idx],
                "TOU_FLAG": np.where(tou, "Y", "N"),
                "BUILD_DATE": self.archive_text["build_date"].gather(idx),
                "CANCEL_DATE": self.archive_text["cancel_date"]
                .gather(idx)
                .zip_with(pl.Series(closed), pl.Series([None], dtype=pl.String)),
            }
        )

    def _archive_text(self) -> dict[str, pl.Series]:
        """The archive's text columns that never change from month to month, made once."""
        pop, d = self.pop, self.d
        number = pop.cons_no.astype(np.int64)

        def ymd(month_index: int, offset: int) -> str:
            ym = self.months[month_index]
            return (dt.date(ym // 100, ym % 100, 1) + dt.timedelta(offset)).strftime("%Y%m%d")

        build = [
            ymd(o, int(c % 20)) if o > 0 else b.strftime("%Y%m%d")
            for o, b, c in zip(pop.open_month, pop.build_date, number, strict=True)
        ]
        unknown = (number * 7919 % 10_000) < d.unknown_build_date * 10_000
        build = np.where(unknown, np.where(number % 2 == 0, "00000000", ""), build)
        last = len(self.months) - 1
        cancel = [
            ymd(min(c, last), int(k % 25)) for c, k in zip(pop.close_month, number, strict=True)
        ]
        return {
            "name": pl.Series(pop.name, dtype=pl.String),
            "addr": pl.Series(pop.addr, dtype=pl.String),
            "mobile": pl.Series([m or None for m in pop.mobile], dtype=pl.String),
            "cert_no": pl.Series(pop.cert_no, dtype=pl.String),
            "build_date": pl.Series([b or None for b in build], dtype=pl.String),
            "cancel_date": pl.Series(cancel, dtype=pl.String),
        }

    def _tariff(
        self,
        etype: np.ndarray,
        kwh: np.ndarray,
        rates: np.ndarray,
        tou: np.ndarray,
        cap: np.ndarray,
        month: int,
    ) -> np.ndarray:
        """Bill amount in yuan: tiered residential tariff, time-of-use and capacity charges."""
        hi_season = month in (7, 8, 9, 12, 1)
        t1, t2 = (260.0, 600.0) if hi_season else (180.0, 400.0)
        tier = (
            np.minimum(kwh, t1) * 0.558
            + np.clip(kwh - t1, 0, t2 - t1) * 0.608
            + np.clip(kwh - t2, 0, None) * 0.858
        )
        tip, peak, _flat, valley = rates.T
        res = tier + np.where(tou, (tip + peak) * 0.05 - valley * 0.20, 0.0)
        com = np.where(tou, tip * 1.25 + peak * 1.02 + _flat * 0.68 + valley * 0.33, kwh * 0.68)
        ind = tip * 1.12 + peak * 0.92 + _flat * 0.62 + valley * 0.30 + cap * 20.0
        agri = kwh * 0.52
        amount = np.select([etype == "100", etype == "200", etype == "300"], [res, com, ind], agri)
        return np.round(amount, 2)

    def _bills(self, t: int, ym: int, active: np.ndarray, energy: np.ndarray) -> pl.DataFrame:
        pop, rng, d, s = self.pop, self.rng, self.d, self.s
        kwh = energy.sum(axis=1) / 100.0
        rates = np.round(energy[:, :, None] * s.shares[active][:, None, :]).sum(axis=1) / 100.0
        rates[:, 2] = kwh - rates[:, [0, 1, 3]].sum(axis=1)
        tou = pop.tou[active] | ((pop.tou_switch[active] >= 0) & (pop.tou_switch[active] <= t))
        etype = attribute("elec_type")[pop.archetype[active]]
        amount = self._tariff(etype, kwh, rates, tou, pop.contract_cap[active], ym % 100)
        rates = np.where(tou[:, None], np.round(rates, 2), 0.0)
        mismatch = self._hits(len(active), d.tou_mismatch, "tou_mismatch", eligible=tou)
        rates[mismatch, 1] += np.round(kwh[mismatch] * rng.uniform(0.1, 0.3, mismatch.sum()), 2)
        nxt = month_add(ym, 1)
        rel = dt.date(nxt // 100, nxt % 100, 1) + dt.timedelta(days=int(rng.integers(2, 5)))
        due = rel + dt.timedelta(days=20)
        prc = np.where(etype == "100", np.where(tou, "102", "101"), np.char.add(etype, "1"))
        frame = pl.DataFrame(
            {
                "CONS_NO": pop.cons_no[active],
                "BILL_YM": str(ym),
                "T_PQ": np.round(kwh, 2),
                "TIP_PQ": rates[:, 0],
                "PEAK_PQ": rates[:, 1],
                "FLAT_PQ": rates[:, 2],
                "VALLEY_PQ": rates[:, 3],
                "T_AMT": amount,
                "PRC_CODE": prc,
                "BILL_FLAG": "N",
                "REL_DATE": rel,
                "DUE_DATE": due,
            }
        )
        # Correction bills: the previous month's bill re-issued with the amount corrected.
        if s.bills:
            prev = s.bills[-1]
            corr = np.flatnonzero(
                self._hits(len(prev["acc"]), d.correction_bill, "correction_bill")
            )
            if len(corr):
                prev_frame = prev["frame"][corr]
                factor = rng.uniform(0.85, 1.15, len(corr))
                corrected = prev_frame.with_columns(
                    (pl.col("T_AMT") * factor).round(2),
                    (pl.col("T_PQ") * factor).round(2),
                    *[
                        (pl.col(c) * factor).round(2)
                        for c in ("TIP_PQ", "PEAK_PQ", "FLAT_PQ", "VALLEY_PQ")
                    ],
                    pl.lit("C").alias("BILL_FLAG"),
                    pl.lit(rel).alias("REL_DATE"),
                    pl.lit(due).alias("DUE_DATE"),
                )
                frame = pl.concat([frame, corrected])
        self._schedule_payments(t, ym, active, amount, rel, due)
        s.bills.append({"acc": active, "frame": frame[: len(active)]})
        return frame

    def _schedule_payments(
        self, t: int, ym: int, active: np.ndarray, amount: np.ndarray, rel: dt.date, due: dt.date
    ) -> None:
        pop, rng, s = self.pop, self.rng, self.s
        n = len(active)
        q = _sigmoid(self.risk[active, t])
        late = np.clip(attribute("late_base")[pop.archetype[active]] + 2 * q, 0, 0.9)
        u = rng.random(n)
        delay = np.where(
            u < q,
            30 + rng.geometric(1 / 25, n),
            np.where(u < q + late, rng.integers(1, 30, n), -rng.integers(0, 19, n)),
        )
        pay_day = np.array([(due - _EPOCH).days]) + delay
        pay_day = np.maximum(pay_day, (rel - _EPOCH).days)
        online = rng.random(n) < pop.pay_online[active]
        mode = np.where(
            online,
            rng.choice(["03", "04", "05"], n, p=[0.45, 0.35, 0.2]),
            rng.choice(["01", "02", "06"], n, p=[0.45, 0.4, 0.15]),
        )
        paid = amount > 0
        seconds = rng.integers(7 * 3600, 22 * 3600, n)
        s.pending_pay.append(
            pl.DataFrame(
                {
                    "acc": active[paid],
                    "day": pay_day[paid],
                    "sec": seconds[paid],
                    "amt": np.round(amount[paid] * 100).astype(np.int64),
                    "mode": mode[paid],
                    "bill_ym": str(ym),
                    "due": (due - _EPOCH).days,
                }
            ).cast(_PAY_SCHEMA)
        )
        # Prepayments: round sums paid ahead with no bill.
        pre_rate = attribute("prepay")[pop.archetype[active]]
        pre = np.flatnonzero(rng.random(n) < pre_rate)
        first = (dt.date(ym // 100, ym % 100, 1) - _EPOCH).days
        if len(pre):
            s.pending_pay.append(
                pl.DataFrame(
                    {
                        "acc": active[pre],
                        "day": first + rng.integers(0, 28, len(pre)),
                        "sec": rng.integers(7 * 3600, 22 * 3600, len(pre)),
                        "amt": rng.choice([5000, 10000, 20000, 50000], len(pre)).astype(np.int64),
                        "mode": rng.choice(["03", "04", "05"], len(pre)),
                        "bill_ym": None,
                        "due": np.full(len(pre), 10**6),
                    },
                    schema_overrides={"bill_ym": pl.String},
                ).cast(_PAY_SCHEMA)
            )

    def _payments(self, ym: int) -> pl.DataFrame:
        d, s = self.d, self.s
        first = (dt.date(ym // 100, ym % 100, 1) - _EPOCH).days
        last = first + len(month_days(ym))
        allpay = pl.concat(s.pending_pay) if s.pending_pay else pl.DataFrame()
        now = allpay.filter((pl.col("day") >= first) & (pl.col("day") < last))
        s.pending_pay = [allpay.filter(pl.col("day") >= last)]
        n = len(now)
        sn = np.array([f"PS{s.pay_seq + i:012d}" for i in range(n)])
        s.pay_seq += n
        ts = (now["day"].to_numpy() * 86400 + now["sec"].to_numpy()).astype("datetime64[s]")
        compact = self._hits(n, d.compact_pay_time, "compact_pay_time")
        stamps = np.datetime_as_string(ts, unit="s").tolist()
        pay_time = [
            t.replace("-", "").replace("T", "").replace(":", "")
            if c
            else t.replace("-", "/").replace("T", " ")
            for t, c in zip(stamps, compact, strict=True)
        ]
        spaced = self._hits(n, d.cons_no_spaces / 5, "cons_no_spaces:fin")
        cons = [
            (" " if sp else "") + c.lstrip("0")
            for c, sp in zip(self.pop.cons_no[now["acc"].to_numpy()].tolist(), spaced, strict=True)
        ]
        frame = pl.DataFrame(
            {
                "PAY_SN": sn,
                "CONS_NO": pl.Series(cons, dtype=pl.String),
                "PAY_TIME": pl.Series(pay_time, dtype=pl.String),
                "PAY_AMT": now["amt"],
                "PAY_MODE": now["mode"],
                "BILL_YM": now["bill_ym"],
                "REV_FLAG": "0",
                "ORIG_PAY_SN": None,
            },
            schema_overrides={"ORIG_PAY_SN": pl.String},
        ).cast(
            {"PAY_SN": pl.String, "PAY_AMT": pl.Int64, "PAY_MODE": pl.String, "BILL_YM": pl.String}
        )
        # Reversals: a cashier error cancelled by a negative row, then paid again correctly.
        rev = np.flatnonzero(self._hits(n, d.reversal, "reversal"))
        if len(rev):
            orig = frame[rev]
            k = len(rev)
            rsn = np.array([f"PS{s.pay_seq + i:012d}" for i in range(2 * k)])
            s.pay_seq += 2 * k
            reversal = orig.with_columns(
                pl.Series("PAY_SN", rsn[:k]),
                (-pl.col("PAY_AMT")).alias("PAY_AMT"),
                pl.lit("1").alias("REV_FLAG"),
                pl.col("PAY_SN").alias("ORIG_PAY_SN"),
            )
            repaid = orig.with_columns(pl.Series("PAY_SN", rsn[k:]))
            frame = pl.concat([frame, reversal, repaid])
        orphans = self._orphan_rows(
            frame.filter(pl.col("REV_FLAG") == "0"), "CONS_NO", "orphan:fin"
        )
        if len(orphans):
            osn = [f"PS{s.pay_seq + i:012d}" for i in range(len(orphans))]
            s.pay_seq += len(orphans)
            orphans = orphans.with_columns(
                pl.Series("PAY_SN", osn, dtype=pl.String),
                pl.col("CONS_NO").str.strip_chars_start("0"),
            )
            frame = pl.concat([frame, orphans])
        return frame

    def _arrears(self, ym: int) -> pl.DataFrame:
        """Month-end snapshot: bills past due and still unpaid, with the late fee so far."""
        s = self.s
        snap = month_days(ym)[-1]
        snap_day = (snap - _EPOCH).days
        if not s.pending_pay:
            return pl.DataFrame(
                schema={
                    "CONS_NO": pl.String,
                    "BILL_YM": pl.String,
                    "OWE_AMT": pl.Float64,
                    "PENALTY_AMT": pl.Float64,
                    "SNAP_DATE": pl.Date,
                }
            )
        open_bills = pl.concat(s.pending_pay).filter(
            pl.col("bill_ym").is_not_null()
            & (pl.col("due") < snap_day)
            & (pl.col("day") > snap_day)
        )
        acc = open_bills["acc"].to_numpy()
        overdue = snap_day - open_bills["due"].to_numpy()
        owe = open_bills["amt"].to_numpy() / 100.0
        etype = attribute("elec_type")[self.pop.archetype[acc]]
        rate = np.where(etype == "100", 0.001, 0.002)
        return pl.DataFrame(
            {
                "CONS_NO": np.char.lstrip(self.pop.cons_no[acc], "0"),
                "BILL_YM": open_bills["bill_ym"],
                "OWE_AMT": np.round(owe, 2),
                "PENALTY_AMT": np.round(owe * rate * overdue, 2),
                "SNAP_DATE": snap,
            }
        )

    def _outages(self, ym: int, days: list[dt.date]) -> pl.DataFrame:
        rng, s = self.rng, self.s
        tgs = np.unique(self.pop.tg_id)
        summer = 2.0 if ym % 100 in (6, 7, 8) else 1.0
        n_fault = rng.poisson(0.30 * summer, len(tgs))
        n_plan = rng.poisson(0.15, len(tgs))
        rows = []
        for tg, nf, npl in zip(tgs, n_fault, n_plan, strict=True):
            for kind, count in (("故障", nf), ("计划", npl)):
                for _ in range(count):
                    day = days[int(rng.integers(len(days)))]
                    if kind == "计划":
                        start = dt.datetime.combine(day, dt.time(8, 0)) + dt.timedelta(
                            minutes=int(rng.integers(0, 60))
                        )
                        minutes = int(rng.integers(240, 480))
                        cause = rng.choice(["计划检修", "线路改造", "配网升级工程"])
                    else:
                        start = dt.datetime.combine(day, dt.time(0, 0)) + dt.timedelta(
                            minutes=int(rng.integers(0, 1440))
                        )
                        minutes = int(np.clip(rng.lognormal(np.log(90), 0.7), 10, 1440))
                        cause = rng.choice(
                            ["雷击跳闸", "线路老化故障", "配变过载", "外力破坏", "树障"]
                        )
                    s.outage_seq += 1
                    end = start + dt.timedelta(minutes=minutes)
                    ongoing = ym == self.months[-1] and day == days[-1] and rng.random() < 0.5
                    rows.append(
                        {
                            "OUTAGE_ID": f"TD{s.outage_seq:09d}",
                            "TG_ID": tg,
                            "START_TIME": start,
                            "END_TIME": None if ongoing else end,
                            "OUTAGE_TYPE": kind,
                            "CAUSE": str(cause),
                        }
                    )
        return pl.DataFrame(
            rows,
            schema={
                "OUTAGE_ID": pl.String,
                "TG_ID": pl.String,
                "START_TIME": pl.Datetime("us"),
                "END_TIME": pl.Datetime("us"),
                "OUTAGE_TYPE": pl.String,
                "CAUSE": pl.String,
            },
        )

    def _work_orders(
        self, t: int, ym: int, days: list[dt.date], active: np.ndarray, outages: pl.DataFrame
    ) -> pl.DataFrame:
        pop, rng, s = self.pop, self.rng, self.s
        hit_tgs = set(outages["TG_ID"].to_list())
        arch = pop.archetype[active]
        rate = attribute("orders")[arch]
        in_outage = np.array([tg in hit_tgs for tg in pop.tg_id[active]])
        rate = rate * np.where(in_outage, 2.5, 1.0)
        counts = rng.poisson(rate)
        who = np.repeat(active, counts)
        n, d = len(who), self.d
        hb = self._hits(n, d.cons_no_hb, "cons_no_hb")
        spaced = self._hits(n, d.cons_no_spaces, "cons_no_spaces:crm", eligible=~hb)
        orphan = self._hits(n, d.orphan, "orphan:crm", eligible=~hb & ~spaced)
        flags = zip(
            np.select([hb, spaced, orphan], ["hb", "spaced", "orphan"], "plain").tolist(),
            self._hits(n, d.utc_z, "utc_z").tolist(),
            self._hits(n, d.order_disorder, "order_disorder").tolist(),
            (rng.random(n) < 0.03).tolist(),  # enquiries often come without an account
            strict=True,
        )
        lines = []
        types = ["故障报修", "投诉", "咨询", "业务办理", "意见建议", "表扬"]
        for i, (form, utc, disorder, anonymous) in zip(who, flags, strict=True):
            a = ARCHETYPES[pop.archetype[i]]
            q = _sigmoid(self.risk[i, t])
            complaint = min(0.6, a.complaint + q * 0.3)
            p = np.array([0.33, complaint, 0.30, 0.20, 0.04, 0.03])
            p[0] += 0.25 if pop.tg_id[i] in hit_tgs else 0.0
            otype = types[int(rng.choice(6, p=p / p.sum()))]
            s.order_seq += 1
            cons = pop.cons_no[i]
            if form == "hb":
                cons = "HB" + cons
            elif form == "spaced":
                cons = f"{cons[:4]} {cons[4:7]} {cons[7:]}"
            elif form == "orphan":
                cons = str(rng.choice(self.orphans))
            elif anonymous and otype == "咨询":
                cons = None
            order_no = f"WO{ym}{s.order_seq:07d}"
            lines.extend(self._order_versions(i, days, otype, order_no, cons, utc, disorder))
        frame = (
            pl.DataFrame(lines, schema=_ORDER_SCHEMA)
            if lines
            else pl.DataFrame(schema=_ORDER_SCHEMA)
        )
        s.pending_orders.append(frame)
        allv = pl.concat(s.pending_orders)
        month_key = f"{ym // 100:04d}-{ym % 100:02d}"
        now = allv.filter(pl.col("_local").str.starts_with(month_key))
        s.pending_orders = [allv.filter(pl.col("_local") > month_key + "-99")]
        return now.drop("_local")

    def _order_versions(
        self,
        i: int,
        days: list[dt.date],
        otype: str,
        order_no: str,
        cons: str | None,
        utc: bool,
        disorder: bool,
    ) -> list[dict]:
        """The versions of one work order, as the agents' edits produce them."""
        pop, rng = self.pop, self.rng
        rural = DISTRICTS[DISTRICT_CODES[pop.district[i]]][1]
        day = days[int(rng.integers(len(days)))]
        accept = dt.datetime.combine(day, dt.time(7)) + dt.timedelta(
            minutes=int(rng.integers(0, 15 * 60))
        )
        dispatch = accept + dt.timedelta(minutes=float(rng.lognormal(np.log(8), 0.6)))
        arrive = finish = None
        if otype == "故障报修":
            arrive = dispatch + dt.timedelta(
                minutes=float(rng.lognormal(np.log(55 if rural else 30), 0.5))
            )
            finish = arrive + dt.timedelta(minutes=float(rng.lognormal(np.log(80), 0.6)))
        elif otype == "业务办理":
            finish = accept + dt.timedelta(minutes=float(rng.lognormal(np.log(70), 0.7)))
        elif otype == "投诉":
            finish = accept + dt.timedelta(hours=float(rng.lognormal(np.log(20), 0.6)))
        else:
            finish = dispatch + dt.timedelta(minutes=float(rng.integers(2, 40)))
        if disorder:
            finish = accept - dt.timedelta(minutes=int(rng.integers(5, 600)))
        late = (finish - accept) > dt.timedelta(hours=2) if otype != "投诉" else rng.random() < 0.5
        sat = rng.choice(
            ["非常满意", "满意", "一般", "不满意"],
            p=[0.25, 0.40, 0.20, 0.15] if late else [0.55, 0.38, 0.05, 0.02],
        )

        def ts(x: dt.datetime | None) -> str | None:
            if x is None:
                return None
            if utc:
                return (x - dt.timedelta(hours=8)).strftime("%Y-%m-%dT%H:%M:%SZ")
            return x.strftime("%Y-%m-%dT%H:%M:%S+08:00")

        channel = (
            "app"
            if rng.random() < pop.pay_online[i] * 0.6
            else str(rng.choice(["95598", "wechat", "hall"], p=[0.75, 0.15, 0.10]))
        )
        content = _CONTENT[otype][int(rng.integers(len(_CONTENT[otype])))]
        # Agents paste phone numbers into the text; at least once per drop, so that
        # redaction always has something to prove itself on.
        if pop.mobile[i] and (rng.random() < 0.15 or "phone_in_text" not in self.defect_log):
            content += f"，联系电话{pop.mobile[i]}"
            self._log("phone_in_text", 1)
        if otype == "投诉" and rng.random() < 0.3:
            content += " 😡"
        if rng.random() < 0.05:
            content += "\n客户要求回电。"
        sub = _SUBTYPE[otype][int(rng.integers(len(_SUBTYPE[otype])))]
        base = {
            "order_no": order_no,
            "cons_no": cons,
            "channel": channel,
            "order_type": otype,
            "sub_type": sub,
            "accept_time": ts(accept),
            "dispatch_time": None,
            "arrive_time": None,
            "finish_time": None,
            "satisfaction": None,
            "content": content,
        }
        steps = [({"status": "受理"}, accept)]
        if otype in ("故障报修", "业务办理", "投诉"):
            steps.append(({"status": "处理中", "dispatch_time": ts(dispatch)}, dispatch))
        done = {
            "status": "已办结",
            "dispatch_time": ts(dispatch),
            "arrive_time": ts(arrive),
            "finish_time": ts(finish),
        }
        steps.append((done, max(finish, accept)))
        if rng.random() < 0.7:
            steps.append(
                (
                    done | {"status": "已回访", "satisfaction": str(sat)},
                    max(finish, accept) + dt.timedelta(hours=float(rng.integers(2, 48))),
                )
            )
        out = []
        for v, (change, when) in enumerate(steps, start=1):
            out.append(base | change | {"version": v, "_local": when.strftime("%Y-%m-%d")})
        return out

    def _weather(self, days: list[dt.date], di: np.ndarray) -> pl.DataFrame:
        n_d = len(DISTRICT_CODES)
        return pl.DataFrame(
            {
                "DATE": pl.Series(days, dtype=pl.Date).gather(np.tile(np.arange(len(days)), n_d)),
                "DISTRICT_CODE": np.repeat(np.array(DISTRICT_CODES), len(days)),
                "T_MAX": self.t_max[:, di].ravel(),
                "T_MIN": self.t_min[:, di].ravel(),
                "PRECIP_MM": self.precip[:, di].ravel(),
            }
        )

    def _economy(self, t: int, ym: int) -> pl.DataFrame:
        rng = self.rng
        base = 104.0 + 2.0 * np.sin(t / 4.0)
        return pl.DataFrame(
            {
                "YM": str(ym),
                "DISTRICT_CODE": list(DISTRICT_CODES),
                "INDUSTRY_INDEX": np.round(base + rng.normal(0, 2.0, len(DISTRICT_CODES)), 1),
                "RETAIL_INDEX": np.round(base + 1.5 + rng.normal(0, 1.5, len(DISTRICT_CODES)), 1),
            }
        )

    # ----------------------------------------------------------------------------------------
    def monthly_energy(self) -> pl.DataFrame:
        """Per account and month: the energy actually consumed, kWh (what metering must recover)."""
        return pl.concat(self.energy_log) if self.energy_log else pl.DataFrame()

    def truth(self) -> pl.DataFrame:
        """Per account: archetype, intended segment, and the next-3-month default outcome."""
        pop, rng = self.pop, self.rng
        t_end = len(self.months)
        q = _sigmoid(self.risk[:, t_end : t_end + 3])
        p3 = 1.0 - np.prod(1.0 - q, axis=1)
        realised = (rng.random(q.shape) < q).any(axis=1)
        segment = attribute("segment")[pop.archetype]
        segment = np.where(p3 >= 0.3, "high_risk", segment)
        active = pop.close_month > t_end - 1
        return pl.DataFrame(
            {
                "cons_no": pop.cons_no,
                "archetype": attribute("name")[pop.archetype],
                "segment": segment,
                "elec_type_code": attribute("elec_type")[pop.archetype],
                "district_code": [DISTRICT_CODES[x] for x in pop.district],
                "is_active_at_end": active,
                "p_default_next_3m": np.round(np.where(active, p3, 0.0), 6),
                "defaults_next_3m": realised & active,
            }
        )


_PAY_SCHEMA = {
    "acc": pl.Int64,
    "day": pl.Int64,
    "sec": pl.Int64,
    "amt": pl.Int64,
    "mode": pl.String,
    "bill_ym": pl.String,
    "due": pl.Int64,
}
_ORDER_SCHEMA = {
    "order_no": pl.String,
    "version": pl.Int64,
    "cons_no": pl.String,
    "channel": pl.String,
    "order_type": pl.String,
    "sub_type": pl.String,
    "accept_time": pl.String,
    "dispatch_time": pl.String,
    "arrive_time": pl.String,
    "finish_time": pl.String,
    "status": pl.String,
    "satisfaction": pl.String,
    "content": pl.String,
    "_local": pl.String,
}
_CONTENT = {
    "故障报修": [
        "客户反映家中突然停电，请尽快派人处理",
        "客户反映电压不稳，灯光闪烁",
        "客户反映表箱冒烟，请紧急处理",
    ],
    "投诉": [
        "客户投诉停电未提前通知",
        "客户对电费金额有异议，要求核查",
        "客户投诉抢修人员到达过慢",
    ],
    "咨询": ["客户咨询峰谷电价政策", "客户咨询电费缴纳方式", "客户咨询电动汽车充电桩报装流程"],
    "业务办理": ["客户申请更名过户", "客户申请增容", "客户申请办理峰谷分时电价"],
    "意见建议": ["客户建议增加网上国网缴费提醒", "客户建议延长营业厅服务时间"],
    "表扬": ["客户表扬抢修人员服务热情", "客户表扬营业厅工作人员耐心细致"],
}
_SUBTYPE = {
    "故障报修": ["低压故障", "高压故障", "计量故障"],
    "投诉": ["服务投诉", "电费投诉", "停电投诉"],
    "咨询": ["电价咨询", "缴费咨询", "业务咨询"],
    "业务办理": ["更名过户", "增容", "峰谷电价"],
    "意见建议": ["服务建议"],
    "表扬": ["服务表扬"],
}

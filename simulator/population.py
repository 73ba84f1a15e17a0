"""The accounts: archetype, place, tariff, meter and latent state of each, plus personal data."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from simulator.archetypes import ARCHETYPES, attribute
from simulator.calendar import DISTRICT_CODES, DISTRICT_WEIGHTS, DISTRICTS

_SURNAMES = list(
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘蒋蔡余杜叶程魏苏吕丁任沈姚卢"
)
_GIVEN = list(
    "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉萍红建文辉力斌波宁鹏飞云琳晨浩宇欣怡子涵梓萱"
)
_STREETS = [
    "解放大道",
    "中山大道",
    "建设大道",
    "武珞路",
    "珞喻路",
    "雄楚大道",
    "友谊大道",
    "和平大道",
    "汉阳大道",
    "鹦鹉大道",
    "光谷大道",
    "民族大道",
    "金银湖路",
    "东风大道",
    "古田路",
    "沿江大道",
]
_COMPANY_WORDS = [
    "鑫源",
    "华中",
    "长江",
    "楚天",
    "汉正",
    "江城",
    "光谷",
    "恒达",
    "联创",
    "金桥",
    "东湖",
    "晴川",
]
_COMPANY_KIND = {
    "shop": ["商贸行", "餐饮店", "便利超市", "五金店", "美发店", "药房"],
    "office": ["科技有限公司", "置业有限公司", "大厦物业管理处", "信息技术有限公司"],
    "shift1": ["机械制造有限公司", "包装材料有限公司", "家具厂"],
    "shift2": ["汽车零部件有限公司", "食品有限公司", "塑胶制品有限公司"],
    "shift3": ["钢铁有限公司", "化工有限公司", "数据中心"],
    "pump": ["农业合作社排灌站", "家庭农场", "水产养殖场"],
}
_ID_WEIGHTS = np.array([7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2])
_ID_CHECK = "10X98765432"

# Old meters without rate registers wrap their register at these values (kWh).
WRAP_5 = 100_000_00  # 99999.99 + 0.01, in cents
WRAP_6 = 1_000_000_00
WRAP_NONE = 10**15


@dataclass
class Population:
    cons_no: np.ndarray  # str, 10 digits
    archetype: np.ndarray  # int index into ARCHETYPES
    district: np.ndarray  # int index into DISTRICT_CODES
    org_no: np.ndarray  # str
    tg_id: np.ndarray  # str
    base_kwh: np.ndarray  # daily median kWh
    tou: np.ndarray  # bool, on time-of-use tariff at the start
    tou_switch: np.ndarray  # int month index when a non-TOU account adopts TOU (-1 never)
    has_rate_regs: np.ndarray  # bool
    wrap_cents: np.ndarray  # int64
    reg_init_cents: np.ndarray  # int64 initial register
    risk0: np.ndarray  # latent log-odds of 30+ days past due
    risk_drift: np.ndarray
    build_date: np.ndarray  # dt.date
    open_month: np.ndarray  # month index from which the account exists (0 = before window)
    close_month: np.ndarray  # month index from which it is closed (large = never)
    contract_cap: np.ndarray
    special_flag: np.ndarray  # str
    trade_code: np.ndarray  # str
    birth_year: np.ndarray  # int (0 for companies)
    pay_online: np.ndarray  # per-account share of online payments
    name: list[str]
    addr: list[str]
    mobile: list[str]
    cert_no: list[str]

    @property
    def n(self) -> int:
        return len(self.cons_no)


_PREFIXES = ["138", "139", "137", "135", "150", "158", "186", "187", "189", "177", "199"]
_CREDIT_CHARS = list("0123456789ABCDEFGHJKLMNPQRTUWXY")


def _with_check_digit(bodies: list[str]) -> list[str]:
    """Append the ISO 7064 MOD 11-2 check character to 17-digit identity-number bodies."""
    if not bodies:
        return []
    digits = np.frombuffer("".join(bodies).encode(), np.uint8).reshape(-1, 17) - 48
    checks = (digits.astype(np.int64) @ _ID_WEIGHTS) % 11
    return [b + _ID_CHECK[c] for b, c in zip(bodies, checks.tolist(), strict=True)]


def _personal_data(
    rng: np.random.Generator,
    arch: np.ndarray,
    district: np.ndarray,
    is_res: np.ndarray,
    birth_year: np.ndarray,
) -> tuple[list[str], list[str], list[str], list[str]]:
    """Names, addresses, mobiles (as typed) and certificate numbers of every account.

    Every random column is drawn at once; the loop below only formats strings.
    """
    n = len(arch)

    def ints(low: int, high: int, size: int | tuple[int, int] = n) -> list:
        return rng.integers(low, high, size).tolist()

    street, surname, given_len = ints(0, len(_STREETS)), ints(0, len(_SURNAMES)), ints(1, 3)
    given = ints(0, len(_GIVEN), (n, 2))
    house, building, unit, floor, room = (
        ints(1, 999),
        ints(1, 30),
        ints(1, 6),
        ints(1, 33),
        ints(1, 5),
    )
    month, day, seq = ints(1, 13), ints(1, 29), ints(0, 1000)
    masked = (rng.random(n) < 0.05).tolist()
    word, kind, company_no = ints(0, len(_COMPANY_WORDS)), ints(0, 10**6), ints(1, 2000)
    credit = ints(0, len(_CREDIT_CHARS), (n, 13))
    quirk = rng.random(n).tolist()
    style = rng.choice(4, size=n, p=[0.6, 0.15, 0.1, 0.15]).tolist()
    prefix, rest = ints(0, len(_PREFIXES)), ints(0, 10**8)
    curves = attribute("curve")[arch].tolist()
    residential = is_res.tolist()

    names, addrs, bodies, certs = [], [], [], []
    for i in range(n):
        dcode = DISTRICT_CODES[district[i]]
        dname = DISTRICTS[dcode][0]
        road = _STREETS[street[i]]
        if residential[i]:
            name = _SURNAMES[surname[i]] + "".join(_GIVEN[g] for g in given[i][: given_len[i]])
            addr = (
                f"湖北省武汉市{dname}区{road}{house[i]}号{building[i]}栋{unit[i]}单元"
                f"{floor[i]}{room[i]:02d}室"
            )
            bodies.append(f"{dcode}{int(birth_year[i]):04d}{month[i]:02d}{day[i]:02d}{seq[i]:03d}")
            certs.append(None)
        else:
            kinds = _COMPANY_KIND.get(curves[i], _COMPANY_KIND["shop"])
            name = f"武汉{_COMPANY_WORDS[word[i]]}{kinds[kind[i] % len(kinds)]}"
            addr = f"湖北省武汉市{dname}区{road}{company_no[i]}号"
            certs.append("91420" + "".join(_CREDIT_CHARS[c] for c in credit[i]))
        # The archive's quirk: names typed with trailing or full-width spaces.
        if quirk[i] < 0.03:
            name += "  "
        elif quirk[i] < 0.05:
            name += "\u3000"
        names.append(name)
        addrs.append(addr)
    ids = iter(_with_check_digit(bodies))
    for i in range(n):
        if certs[i] is None:
            cert = next(ids)
            certs[i] = cert[:6] + "********" + cert[14:] if masked[i] else cert

    mobiles = []
    for st, p, r in zip(style, prefix, rest, strict=True):
        number = f"{_PREFIXES[p]}{r:08d}"
        typed = (
            number,
            f"{number[:3]}-{number[3:7]}-{number[7:]}",
            f"+86 {number[:3]} {number[3:7]} {number[7:]}",
            "",
        )
        mobiles.append(typed[st])
    return names, addrs, mobiles, certs


def _unique_integers(rng: np.random.Generator, n: int, low: int, high: int) -> np.ndarray:
    """``n`` distinct integers in [low, high), in random order, without a huge range in memory."""
    drawn = np.unique(rng.integers(low, high, int(n * 1.1) + 16))
    while len(drawn) < n:
        drawn = np.unique(np.concatenate([drawn, rng.integers(low, high, n)]))
    return rng.permutation(drawn)[:n]


def build_population(n: int, n_months: int, rng: np.random.Generator) -> Population:
    """Draw ``n`` accounts and their latent state."""
    shares = np.array([a.share for a in ARCHETYPES])
    arch = rng.choice(len(ARCHETYPES), size=n, p=shares)
    # Unique account numbers; many start with zeros, which fin drops.
    cons_int = _unique_integers(rng, n, 10_000_000, 2_000_000_000)
    cons_no = np.array([f"{v:010d}" for v in cons_int])
    district = rng.choice(len(DISTRICT_CODES), size=n, p=DISTRICT_WEIGHTS)
    office = rng.integers(1, 6, n)
    org_no = np.array(
        [f"{DISTRICT_CODES[d]}{o:03d}" for d, o in zip(district, office, strict=True)]
    )

    is_res = attribute("elec_type")[arch] == "100"
    big = (attribute("elec_type")[arch] == "300") | np.isin(
        attribute("curve")[arch], ["office", "shift1"]
    )
    # Households (and small shops) share public transformer areas of about 150 accounts;
    # large customers have a dedicated transformer.
    tg = np.empty(n, dtype=object)
    shared_idx = np.flatnonzero(~big)
    for d in range(len(DISTRICT_CODES)):
        members = shared_idx[district[shared_idx] == d]
        n_tg = max(1, len(members) // 150)
        tg[members] = [f"TG{DISTRICT_CODES[d]}{k:05d}" for k in rng.integers(0, n_tg, len(members))]
    big_idx = np.flatnonzero(big)
    tg[big_idx] = [f"TG{DISTRICT_CODES[district[i]]}9{j:04d}" for j, i in enumerate(big_idx)]

    base = attribute("kwh_day")[arch] * np.exp(rng.normal(0, attribute("kwh_sigma")[arch]))
    tou = rng.random(n) < attribute("tou_prob")[arch]
    # A few residential accounts adopt time-of-use during the window (seen in the snapshots).
    adopt = (~tou) & is_res & (rng.random(n) < 0.04)
    tou_switch = np.where(adopt, rng.integers(1, max(2, n_months), n), -1)
    has_rate = tou | (rng.random(n) < np.where(is_res, 0.7, 0.85)) | adopt
    wrap = np.where(has_rate, WRAP_NONE, np.where(is_res, WRAP_5, WRAP_6)).astype(np.int64)
    # A register shows the energy of the years since the meter was fitted.
    years = rng.uniform(0.3, 8.0, n)
    reg_init = np.minimum(base * 365 * years * 100, wrap * 0.9).astype(np.int64)

    risk0 = attribute("risk0")[arch] + rng.normal(0, 0.6, n)
    drift = attribute("risk_drift")[arch] * rng.uniform(0.6, 1.4, n)

    today = dt.date(2000, 1, 1)
    build = np.array([today + dt.timedelta(int(x)) for x in rng.integers(-3650, 8000, n)])
    open_month = np.where(rng.random(n) < 0.03, rng.integers(1, max(2, n_months), n), 0)
    close_month = np.where(rng.random(n) < 0.015, rng.integers(1, max(2, n_months), n), 10**6)
    close_month = np.where(close_month <= open_month, 10**6, close_month)

    lo = attribute("cap")[arch, 0]
    hi = attribute("cap")[arch, 1]
    cap = np.round(rng.uniform(lo, hi), 0)

    special = np.empty(n, dtype=object)
    for k, a in enumerate(ARCHETYPES):
        idx = np.flatnonzero(arch == k)
        values, probs = zip(*a.special, strict=True)
        special[idx] = rng.choice(values, size=len(idx), p=probs)
    trade = np.where(
        is_res,
        "T00",
        [
            rng.choice(
                {
                    "shop": ["F52", "H62", "O80"],
                    "office": ["I65", "K70", "L72"],
                    "shift1": ["C21", "C34", "C29"],
                    "shift2": ["C36", "C13", "C29"],
                    "shift3": ["C31", "C26", "I65"],
                    "pump": ["A01", "A04"],
                }.get(ARCHETYPES[a].curve, ["F52"])
            )
            for a in arch
        ],
    )
    birth_lo = attribute("birth")[arch, 0]
    birth_hi = attribute("birth")[arch, 1]
    birth_year = np.where(is_res, rng.integers(birth_lo, birth_hi + 1), 0)
    online = np.clip(attribute("online")[arch] + rng.normal(0, 0.1, n), 0, 1)

    names, addrs, mobiles, certs = _personal_data(rng, arch, district, is_res, birth_year)

    return Population(
        cons_no=cons_no,
        archetype=arch,
        district=district,
        org_no=org_no,
        tg_id=tg.astype(str),
        base_kwh=base,
        tou=tou,
        tou_switch=tou_switch,
        has_rate_regs=has_rate,
        wrap_cents=wrap,
        reg_init_cents=reg_init,
        risk0=risk0,
        risk_drift=drift,
        build_date=build,
        open_month=open_month,
        close_month=close_month,
        contract_cap=cap,
        special_flag=special.astype(str),
        trade_code=np.asarray(trade, dtype=str),
        birth_year=birth_year,
        pay_online=online,
        name=names,
        addr=addrs,
        mobile=mobiles,
        cert_no=certs,
    )

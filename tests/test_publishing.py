"""Publishing logic without the pipeline: rule validation, tags and their history, campaign
eligibility, exclusions, scores, capacity, contact masking and the audit, service plans."""

import json
from datetime import date
from pathlib import Path

import duckdb
import polars as pl
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from ml.config import ConfigError
from ml.months import add_month
from orchestration.ingest.pii import attach_vault
from orchestration.publish.campaigns import (
    TARGET_LABELS,
    assign_account_managers,
    select_targets,
    write_target_files,
)
from orchestration.publish.contacts import mask, resolve_contacts, write_audit
from orchestration.publish.frames import campaign_frame
from orchestration.publish.rules import (
    RULES_DIR,
    contact_masks,
    default_rules,
    load_campaigns,
    load_service_plans,
    load_tags,
)
from orchestration.publish.service import customer_plans, plan_frame
from orchestration.publish.tags import (
    TAG_COLUMNS,
    evaluate_tags,
    extend_tag_history,
    library_digest,
    months_to_evaluate,
    tag_history,
)

MONTH = date(2025, 10, 1)


# ── the rule files ─────────────────────────────────────────────────────────────────────


def test_the_shipped_rules_load_with_enough_tags_and_the_required_campaigns():
    rules = default_rules()
    tags = rules["tags"]["tags"]
    assert len([t for t in tags if t["dimension"] != "segment"]) >= 25
    by_dimension = {d: [t for t in tags if t["dimension"] == d] for d in ("usage", "behaviour")}
    assert all(len(v) >= 5 for v in by_dimension.values())
    assert {"demand", "credit", "segment"} <= {t["dimension"] for t in tags}
    codes = {c["code"] for c in rules["campaigns"]["campaigns"]}
    assert {
        "TOU_PACKAGE",
        "ENERGY_DIAGNOSIS",
        "NEW_ENERGY_CONSULT",
        "PRE_DUE_REMINDER",
        "SPECIAL_CARE_VISIT",
        "DEDICATED_MANAGER",
    } <= codes
    assert {c["channel"] for c in rules["campaigns"]["campaigns"]} == {
        "sms",
        "app_push",
        "manager_visit",
        "home_visit",
    }


def _campaigns_with(tmp_path: Path, change) -> Path:
    doc = yaml.safe_load((RULES_DIR / "campaigns.yaml").read_text("utf-8"))
    change(doc)
    path = tmp_path / "campaigns.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), "utf-8")
    return path


def _first(doc: dict) -> dict:
    return doc["campaigns"][0]  # TOU_PACKAGE


@pytest.mark.parametrize(
    ("change", "where", "says"),
    [
        (
            lambda d: _first(d)["eligibility"]["when"].append(
                {"field": "kwh; DROP TABLE marts.dim_customer", "op": "ge", "value": 1}
            ),
            "campaign TOU_PACKAGE: eligibility/when/2/field",
            "no catalogued field",
        ),
        (
            lambda d: _first(d)["eligibility"]["when"].append(
                {"field": "kwh_12m", "op": "like", "value": "%"}
            ),
            "campaign TOU_PACKAGE: eligibility/when/2/op",
            "is not one of",
        ),
        (
            lambda d: _first(d)["eligibility"]["when"].append(
                {"field": "kwh_12m", "op": "ge", "value": "1 OR 1=1"}
            ),
            "campaign TOU_PACKAGE: eligibility/when/2/value",
            "needs a number",
        ),
        (
            lambda d: _first(d)["eligibility"].update(tags_all=["NO_SUCH_TAG"]),
            "campaign TOU_PACKAGE: eligibility/tags_all",
            "is no tag",
        ),
        (
            lambda d: _first(d)["eligibility"].update(segments=["vip"]),
            "campaign TOU_PACKAGE: eligibility/segments",
            "is no segment",
        ),
        (lambda d: _first(d).update(channel="fax"), "campaign TOU_PACKAGE: channel", "fax"),
        (
            lambda d: _first(d).update(exclusions=["closed_or_suspended"]),
            "campaign TOU_PACKAGE: exclusions",
            "must exclude high_risk",
        ),
        (
            lambda d: _first(d)["capacity"].update(limit=0),
            "campaign TOU_PACKAGE: capacity/limit",
            "minimum",
        ),
        (
            lambda d: _first(d)["capacity"].update(per="street"),
            "campaign TOU_PACKAGE: capacity/per",
            "is not one of",
        ),
        (
            lambda d: _first(d).update(reason="{__class__} {kwh_12m}"),
            "campaign TOU_PACKAGE: reason",
            "__class__",
        ),
        (
            lambda d: _first(d)["score"].append({"field": "holder_name", "weight": 1}),
            "campaign TOU_PACKAGE: score/2/field",
            "unknown",
        ),
        (
            lambda d: d["campaigns"][1].pop("score"),
            "campaign ENERGY_DIAGNOSIS: (the entry)",
            "'score' is a required property",
        ),
        (
            lambda d: d["channels"]["sms"].update(contact_fields=["CERT_NO"]),
            "channels/sms/contact_fields",
            "not a contact field",
        ),
    ],
)
def test_a_bad_campaign_fails_naming_file_campaign_and_field(tmp_path, change, where, says):
    path = _campaigns_with(tmp_path, change)
    with pytest.raises(ConfigError) as err:
        load_campaigns(path)
    message = str(err.value)
    assert str(path) in message and where in message and says in message, message


def test_a_bad_tag_fails_naming_the_tag(tmp_path):
    doc = yaml.safe_load((RULES_DIR / "tags.yaml").read_text("utf-8"))
    path = tmp_path / "tags.yaml"
    # A personal-data column, a field name carrying SQL, then the features' bookkeeping hash:
    # none is a catalogued feature a rule may name.
    for field in ("ADDR", "kwh_12m); DROP TABLE publish.customer_tags; --", "inputs_hash"):
        doc["tags"][3]["when"][0]["field"] = field
        path.write_text(yaml.safe_dump(doc, allow_unicode=True), "utf-8")
        with pytest.raises(ConfigError, match=r"tags\.yaml: tags/3 \(USG_WINTER_HEATING\)/when/0"):
            load_tags(path)
    doc["tags"][3]["when"][0]["field"] = "kwh_12m"
    doc["tags"][4]["code"] = doc["tags"][3]["code"]
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), "utf-8")
    with pytest.raises(ConfigError, match="defined twice"):
        load_tags(path)


def test_service_plans_cover_every_segment_and_never_promise_less_than_the_sla(tmp_path):
    doc = yaml.safe_load((RULES_DIR / "service_plans.yaml").read_text("utf-8"))
    doc["plans"]["basic_need"]["response_minutes"] = 30  # the standard is 15
    path = tmp_path / "service_plans.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), "utf-8")
    with pytest.raises(ConfigError, match="plans/basic_need/response_minutes: 30 min is looser"):
        load_service_plans(path)
    doc["plans"]["basic_need"]["response_minutes"] = 15
    del doc["plans"]["special_care"]
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), "utf-8")
    with pytest.raises(ConfigError, match=r"no plan for segment\(s\) \['special_care'\]"):
        load_service_plans(path)


# ── tags ───────────────────────────────────────────────────────────────────────────────


def test_tags_hold_where_every_condition_holds_and_never_on_a_missing_value():
    library = {
        "tags": [
            {
                "code": "EVENING",
                "when": [
                    {"field": "is_residential", "op": "eq", "value": True},
                    {"field": "peak_share_12m", "op": "ge", "value": 0.4},
                ],
                "value": "peak_share_12m",
            },
            {
                "code": "SEG_X",
                "when": [{"field": "segment_code", "op": "eq", "value": "x"}],
                "value": "segment_code",
            },
        ]
    }
    customers = pl.DataFrame(
        {
            "customer_id": ["a", "b", "c", "d"],
            "as_of_month": [MONTH] * 4,
            "is_residential": [True, True, False, True],
            "peak_share_12m": [0.5, 0.3, 0.6, None],
            "segment_code": ["x", None, "y", "x"],
        }
    )
    tags = evaluate_tags(customers, library)
    assert sorted(tags.select("customer_id", "tag_code").rows()) == [
        ("a", "EVENING"),
        ("a", "SEG_X"),
        ("d", "SEG_X"),
    ]
    assert tags.filter(pl.col("tag_code") == "EVENING")["value"].to_list() == [0.5]
    assert tags.filter(pl.col("tag_code") == "SEG_X")["value"].is_null().all()


def test_tag_history_splits_at_gaps_and_leaves_the_current_interval_open():
    """An interval ends at a gap, and never runs on into the next tag or customer, even one
    month later in the order the history reads them."""
    months = [date(2025, 1, 1), date(2025, 2, 1), date(2025, 4, 1), date(2025, 6, 1)]
    tags = pl.DataFrame(
        {
            "customer_id": ["0"] + ["a"] * 4 + ["b", "b"],
            "tag_code": ["T"] * 6 + ["U"],
            "value": [7.0, 1.0, 2.0, 3.0, 4.0, 9.0, 5.0],
            "as_of_month": [date(2024, 12, 1), *months, date(2025, 5, 1), date(2025, 6, 1)],
        }
    )
    history = tag_history(tags, latest_month=date(2025, 6, 1))
    columns = ("customer_id", "tag_code", "valid_from", "valid_to", "months", "value_to")
    assert history.select(columns).rows() == [
        ("0", "T", date(2024, 12, 1), date(2025, 1, 1), 1, 7.0),
        ("a", "T", date(2025, 1, 1), date(2025, 3, 1), 2, 2.0),
        ("a", "T", date(2025, 4, 1), date(2025, 5, 1), 1, 3.0),
        ("a", "T", date(2025, 6, 1), None, 1, 4.0),
        ("b", "T", date(2025, 5, 1), date(2025, 6, 1), 1, 9.0),
        ("b", "U", date(2025, 6, 1), None, 1, 5.0),
    ]
    assert history["is_current"].to_list() == [False, False, False, True, False, True]


TAG_SCHEMA = dict(zip(TAG_COLUMNS, (pl.String, pl.String, pl.Float64, pl.Date), strict=True))
MONTHS_OF_TAGS = [add_month(date(2024, 11, 1), k) for k in range(10)]  # Nov–Aug


@st.composite
def _tags_then_changed(draw) -> tuple[pl.DataFrame, date, pl.DataFrame, date, date]:
    """Tags as they were up to one latest month, the first month that changed, and the tags
    as they are up to another latest month: the same before the first changed month."""
    cells = st.tuples(
        st.sampled_from("abc"), st.sampled_from("TU"), st.sampled_from(MONTHS_OF_TAGS)
    )
    first = draw(st.sampled_from(MONTHS_OF_TAGS[1:]))
    was_latest = draw(st.sampled_from(MONTHS_OF_TAGS[MONTHS_OF_TAGS.index(first) - 1 :]))
    # Either may be the month before the first changed: a new month, or nothing changed.
    latest = draw(st.sampled_from(MONTHS_OF_TAGS[MONTHS_OF_TAGS.index(first) - 1 :]))
    old = draw(st.sets(cells, max_size=40))
    kept = {c for c in old if c[2] < first}
    new = kept | {c for c in draw(st.sets(cells, max_size=30)) if first <= c[2] <= latest}
    old = {c for c in old if c[2] <= was_latest}

    def frame(cells: set) -> pl.DataFrame:
        rows = [(c, t, float(m.month), m) for c, t, m in sorted(cells)]
        return pl.DataFrame(rows, schema=TAG_SCHEMA, orient="row")

    return frame(old), was_latest, frame(new), first, latest


@settings(max_examples=300, deadline=None)
@given(_tags_then_changed())
def test_the_tag_history_extended_from_the_first_changed_month_is_the_history_made_anew(case):
    """The run reads the history and the changed months' tags, not every month's: the history
    it extends must be the one made from all of them, whatever changed, ended or went on."""
    old, was_latest, new, first, latest = case
    before = add_month(first, -1)
    history = tag_history(old, was_latest)
    recent = new.filter(pl.col("as_of_month") >= before)
    extended = extend_tag_history(history, recent, first, latest)
    assert extended.equals(tag_history(new, latest))


def test_a_tag_history_that_does_not_match_the_tags_is_refused():
    jan, feb = date(2025, 1, 1), date(2025, 2, 1)
    tags = pl.DataFrame([("a", "T", 1.0, jan)], schema=TAG_SCHEMA, orient="row")
    with pytest.raises(ValueError, match="does not match the tags of 2025-01-01"):
        extend_tag_history(tag_history(tags, jan), tags.clear(), feb, feb)


def test_only_the_months_whose_rows_changed_have_their_tags_evaluated_again():
    jan, feb, mar, apr = (date(2025, m, 1) for m in (1, 2, 3, 4))
    stored = {jan: (10, "a"), feb: (10, "b"), mar: (9, "c"), apr: (3, "d")}
    # February's rows changed (same count, another hash), March gained a row, May is new,
    # April is gone (a run of an earlier month, or its features were removed).
    current = {jan: (10, "a"), feb: (10, "b2"), mar: (10, "c"), date(2025, 5, 1): (4, "e")}
    assert months_to_evaluate(stored, current, same_library=True) == (
        [feb, mar, date(2025, 5, 1)],
        [apr],
    )
    assert months_to_evaluate(stored, current, same_library=False) == (sorted(current), [apr])
    assert months_to_evaluate({}, current, same_library=True) == (sorted(current), [])


def test_the_library_digest_changes_with_any_rule():
    library = {
        "version": "1",
        "tags": [{"code": "T", "when": [{"field": "x", "op": "ge", "value": 2}]}],
    }
    changed = {
        "version": "1",
        "tags": [{"code": "T", "when": [{"field": "x", "op": "ge", "value": 3}]}],
    }
    assert library_digest(library) == library_digest(json.loads(json.dumps(library)))
    assert library_digest(library) != library_digest(changed)


# ── campaigns ──────────────────────────────────────────────────────────────────────────

RULES = {"high_risk_grades": ["D", "E"]}


def _customers(n: int, **overrides) -> pl.DataFrame:
    base = {
        "customer_id": [f"c{i:03d}" for i in range(n)],
        "status_code": ["1"] * n,
        "district_code": ["420102"] * n,
        "account_manager_id": ["AM-1"] * n,
        "segment_code": ["basic_need"] * n,
        "risk_grade": ["A"] * n,
        "tags": [["EVENING"]] * n,
        "has_recent_complaint": [False] * n,
        "was_recently_contacted": [False] * n,
        "is_residential": [True] * n,
        "kwh_avg_day_12m": [float(i) for i in range(n)],
    }
    base.update(overrides)
    return pl.DataFrame(base)


def _campaign(**overrides) -> dict:
    campaign = {
        "code": "TEST",
        "channel": "sms",
        "eligibility": {
            "tags_all": ["EVENING"],
            "when": [{"field": "is_residential", "op": "eq", "value": True}],
        },
        "exclusions": [
            "closed_or_suspended",
            "recent_complaint",
            "high_risk",
            "recently_contacted",
        ],
        "score": [{"field": "kwh_avg_day_12m", "weight": 1.0}],
        "capacity": {"per": "total", "limit": 100},
        "reason": "{kwh_avg_day_12m:.0f} kWh a day",
    }
    campaign.update(overrides)
    return campaign


def test_every_exclusion_removes_its_customers_and_is_counted():
    customers = _customers(
        8,
        status_code=["1", "9", "2", "1", "1", "1", "1", "1"],
        has_recent_complaint=[False, False, False, True, False, False, False, False],
        risk_grade=["A", "A", "A", "A", "E", "D", "A", None],
        was_recently_contacted=[False, False, True, False, False, False, True, False],
        tags=[["EVENING"]] * 7 + [["OTHER"]],
    )
    result = select_targets(customers, _campaign(), RULES, MONTH, "r1")
    assert result.targets["customer_id"].to_list() == ["c000"]
    assert result.funnel == {
        "customers": 8,
        "eligible": 7,
        "excluded_closed_or_suspended": 2,
        "excluded_recent_complaint": 1,
        "excluded_high_risk": 2,
        "excluded_recently_contacted": 1,
        "after_exclusions": 1,
        "over_capacity": 0,
        "targets": 1,
    }
    # a reminder campaign that lists only closed accounts keeps the high-risk customers
    lenient = select_targets(
        customers, _campaign(exclusions=["closed_or_suspended"]), RULES, MONTH, "r1"
    )
    assert set(lenient.targets["customer_id"]) == {"c000", "c003", "c004", "c005", "c006"}


def test_capacity_keeps_the_best_scores_per_district_and_per_manager():
    customers = _customers(
        7,
        district_code=["A", "A", "A", "B", "B", "C", None],
        account_manager_id=["m1", "m1", "m2", "m2", "m2", "m2", "m3"],
    )
    by_district = select_targets(
        customers, _campaign(capacity={"per": "district", "limit": 2}), RULES, MONTH, "r"
    )
    assert by_district.targets["customer_id"].to_list() == ["c005", "c004", "c003", "c002", "c001"]
    assert by_district.funnel["excluded_no_district"] == 1
    assert by_district.funnel["over_capacity"] == 1  # c000, the lowest score in district A
    assert by_district.targets["rank"].to_list() == [1, 2, 3, 4, 5]
    by_manager = select_targets(
        customers, _campaign(capacity={"per": "account_manager", "limit": 1}), RULES, MONTH, "r"
    )
    assert by_manager.targets["customer_id"].to_list() == ["c006", "c005", "c001"]
    total = select_targets(
        customers, _campaign(capacity={"per": "total", "limit": 3}), RULES, MONTH, "r"
    )
    assert total.targets["customer_id"].to_list() == ["c006", "c005", "c004"]
    assert total.targets["reason"].to_list()[0] == "6 kWh a day"


def test_a_negative_weight_prefers_low_values_and_missing_values_rank_last():
    customers = _customers(4, kwh_avg_day_12m=[5.0, None, 1.0, 3.0])
    low_first = select_targets(
        customers, _campaign(score=[{"field": "kwh_avg_day_12m", "weight": -1}]), RULES, MONTH, "r"
    )
    assert low_first.targets["customer_id"].to_list()[:3] == ["c002", "c003", "c000"]
    high_first = select_targets(customers, _campaign(), RULES, MONTH, "r")
    assert high_first.targets["customer_id"].to_list() == ["c000", "c003", "c002", "c001"]


def test_rule_values_are_compared_as_literals_never_evaluated():
    customers = _customers(2, segment_code=["basic_need", "x' OR '1'='1"])
    campaign = _campaign(eligibility={"segments": ["x' OR '1'='1"]})
    result = select_targets(customers, campaign, RULES, MONTH, "r")
    assert result.targets["customer_id"].to_list() == ["c001"]


def test_tag_values_are_compared_as_literals_never_evaluated():
    library = {
        "tags": [
            {
                "code": "ODD",
                "when": [{"field": "segment_code", "op": "eq", "value": "x' OR '1'='1"}],
                "value": "segment_code",
            }
        ]
    }
    customers = pl.DataFrame(
        {
            "customer_id": ["a", "b"],
            "as_of_month": [MONTH] * 2,
            "segment_code": ["basic_need", "x' OR '1'='1"],
        }
    )
    assert evaluate_tags(customers, library)["customer_id"].to_list() == ["b"]


def test_account_managers_are_stable_spread_and_only_in_their_district():
    roster = [
        {"manager_id": "m1", "district_code": "420102"},
        {"manager_id": "m2", "district_code": "420102"},
        {"manager_id": "m3", "district_code": "420103"},
    ]
    customers = pl.DataFrame(
        {
            "customer_id": [f"{i:010d}" for i in range(400)],
            "district_code": ["420102"] * 300 + ["420103"] * 99 + ["420199"],
        }
    )
    first = assign_account_managers(customers, roster)
    assert first.to_list() == assign_account_managers(customers, roster).to_list()
    counts = first[:300].value_counts()
    assert set(counts["account_manager_id"]) == {"m1", "m2"}
    assert counts["count"].min() > 120
    assert set(first[300:399]) == {"m3"} and first[399] is None


# ── contacts, masking and the audit ────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("value", "kind", "masked"),
    [
        ("张伟", "name", "张*"),
        ("欧阳明华", "name", "欧***"),
        ("138-1234-5678", "phone", "138****5678"),
        ("+86 138 1234 5678", "phone", "138****5678"),
        ("湖北省武汉市江岸区金银湖路15号14栋3单元1304室", "address", "湖北省武汉市江岸区****"),
        ("汉阳大道232号", "address", "****"),
        ("  ", "name", None),
        (None, "phone", None),
    ],
)
def test_masks_keep_only_a_recognisable_fragment(value, kind, masked):
    assert mask(value, kind) == masked


def test_contacts_are_clear_only_where_the_channel_needs_them_and_every_read_is_audited(
    tmp_path,
):
    vault = duckdb.connect()
    attach_vault(vault, tmp_path / "vault.duckdb", "test-key")
    vault.execute(
        """INSERT INTO vault.customer_pii VALUES
           ('0000000001', 'MOBILE', '13812345678', '202510', 'f', 1),
           ('0000000001', 'CONS_NAME', '张伟', '202510', 'f', 1),
           ('0000000001', 'ADDR', '湖北省武汉市江岸区某路1号', '202510', 'f', 1),
           ('0000000001', 'CERT_NO', '420102199001011234', '202510', 'f', 1),
           ('0000000002', 'CONS_NAME', '李娜', '202510', 'f', 2)"""
    )
    masks = contact_masks()
    assert "CERT_NO" not in masks  # identity numbers are never published
    contacts, audit = resolve_contacts(vault, ["0000000001", "0000000002"], ["MOBILE"], masks)
    row = contacts.row(0, named=True)
    assert row["contact_mobile"] == "13812345678"
    assert row["contact_cons_name"] == "张*"
    assert row["contact_addr"] == "湖北省武汉市江岸区****"
    assert contacts.row(1, named=True)["contact_mobile"] is None
    assert "420102199001011234" not in str(contacts.to_dicts())
    assert len(audit) == 2 * len(masks)
    assert audit.filter(pl.col("field") == "MOBILE")["disclosure"].to_list() == ["clear"] * 2
    assert audit.filter(pl.col("field") == "MOBILE")["found"].to_list() == [True, False]

    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    written = write_audit(
        con, audit, run_id="run-1", campaign="TEST", month=MONTH, output_file="x.csv"
    )
    assert written == 6
    stored = con.execute("SELECT * FROM ops.contact_audit").pl()
    assert set(stored.columns) >= {"customer_id", "field", "disclosure", "found", "campaign_code"}
    assert "value" not in stored.columns
    assert "13812345678" not in str(stored.to_dicts()) and "张伟" not in str(stored.to_dicts())


def test_target_files_are_excel_friendly_csv_and_parquet_with_the_same_rows(tmp_path):
    customers = _customers(3)
    targets = select_targets(customers, _campaign(), RULES, MONTH, "r").targets
    targets = targets.with_columns(pl.lit("138****5678").alias("contact_mobile"))
    csv_path, parquet_path = write_target_files(
        targets, tmp_path, "TEST", MONTH, {"contact_mobile": "联系电话"}
    )
    assert csv_path.name == "TEST_202510.csv"
    raw = csv_path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    header = raw.decode("utf-8-sig").splitlines()[0]
    assert header.startswith("活动编号 campaign_code,") and header.endswith(
        "联系电话 contact_mobile"
    )
    assert pl.read_parquet(parquet_path).equals(targets)
    assert pl.read_csv(csv_path).height == 3
    assert list(TARGET_LABELS)[:4] == ["campaign_code", "as_of_month", "run_id", "customer_id"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["TEST_202510.csv", "TEST_202510.parquet"]


def test_the_campaign_frame_finds_recent_complaints_and_recent_contacts(tmp_path):
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    for schema in ("marts", "ml", "publish"):
        con.execute(f"CREATE SCHEMA {schema}")
    con.execute(
        """CREATE TABLE marts.customer_features AS
           SELECT * FROM (VALUES ('a', DATE '2025-10-01', '1', '420102', 1.0),
                                 ('b', DATE '2025-10-01', '1', '420102', 2.0),
                                 ('c', DATE '2025-10-01', '1', '420102', 3.0),
                                 ('d', DATE '2025-10-01', '1', '420102', 4.0))
             AS t(customer_id, as_of_month, status_code, district_code, kwh_avg_day_12m)"""
    )
    con.execute(
        """CREATE TABLE ml.customer_segments AS SELECT customer_id, as_of_month,
           'basic_need' AS segment_code, 0.5 AS confidence FROM marts.customer_features"""
    )
    con.execute(
        """CREATE TABLE ml.risk_scores AS SELECT customer_id, as_of_month,
           0.1 AS risk_probability, 'B' AS risk_grade FROM marts.customer_features"""
    )
    con.execute(
        """CREATE TABLE marts.dim_customer AS SELECT customer_id, 'none' AS special_group,
           'urban' AS area_type FROM marts.customer_features"""
    )
    con.execute(
        """CREATE TABLE publish.customer_tags AS
           SELECT 'a' AS customer_id, 'EVENING' AS tag_code, 1.0 AS value,
                  DATE '2025-10-01' AS as_of_month"""
    )
    con.execute(
        """CREATE TABLE marts.fct_work_orders AS SELECT * FROM (VALUES
             ('a', 'complaint', TIMESTAMP '2025-10-02 10:00'),   -- 29 days before the end
             ('b', 'complaint', TIMESTAMP '2025-09-30 23:00'),   -- 31 days before
             ('c', 'repair', TIMESTAMP '2025-10-20 10:00'))
           AS t(customer_id, order_type_en, accepted_at)"""
    )
    con.execute(
        """CREATE TABLE publish.campaign_targets AS SELECT * FROM (VALUES
             ('b', DATE '2025-09-01'), ('c', DATE '2025-08-01'), ('d', DATE '2025-10-01'))
           AS t(customer_id, as_of_month)"""
    )
    frame = campaign_frame(
        con, {"kwh_avg_day_12m", "special_group"}, MONTH, complaint_days=30, cooldown_months=1
    )
    by_id = {r["customer_id"]: r for r in frame.iter_rows(named=True)}
    assert by_id["a"]["tags"] == ["EVENING"] and by_id["b"]["tags"] == []
    assert [by_id[c]["has_recent_complaint"] for c in "abcd"] == [True, False, False, False]
    # b was contacted last month; c two months ago (outside the cooldown); d's row is this
    # month's own list, which a re-run replaces
    assert [by_id[c]["was_recently_contacted"] for c in "abcd"] == [False, True, False, False]
    assert by_id["a"]["risk_grade"] == "B" and by_id["a"]["special_group"] == "none"


# ── service plans ──────────────────────────────────────────────────────────────────────


def test_each_customer_gets_their_segments_plan_and_area_promise():
    plans = plan_frame(default_rules()["service_plans"])
    customers = pl.DataFrame(
        {
            "customer_id": ["a", "b", "c"],
            "as_of_month": [MONTH] * 3,
            "segment_code": ["high_value_stable", "basic_need", "special_care"],
            "area_type": ["rural", "urban", "urban"],
            "account_manager_id": ["m1", "m2", "m3"],
        }
    )
    out = customer_plans(customers, plans).rows_by_key("customer_id", named=True, unique=True)
    assert out["a"]["plan_code"] == "SP-VIP" and out["a"]["account_manager_id"] == "m1"
    assert out["a"]["repair_arrival_minutes"] == 60  # the key-account promise, rural
    assert out["b"]["account_manager_id"] is None  # the basic plan has no account manager
    assert out["b"]["repair_arrival_minutes"] == 45
    assert out["c"]["account_manager_id"] == "m3"
    with pytest.raises(ValueError, match="without a service plan"):
        customer_plans(customers.with_columns(pl.lit("unknown").alias("segment_code")), plans)


def test_the_snapshot_asset_copies_within_its_own_memory_limit(tmp_path, monkeypatch):
    """The copy streams: it takes SNAPSHOT_MEMORY, not the platform's whole limit, whose
    buffers it held (4.9 GiB at 100,000 accounts, the peak of a whole run)."""
    from orchestration.assets import publishing
    from orchestration.publish.snapshot import SNAPSHOT_MEMORY, write_snapshot
    from orchestration.resources import FinegridResource

    warehouse = tmp_path / "w.duckdb"
    with duckdb.connect(str(warehouse)) as con:
        con.execute("CREATE SCHEMA marts; CREATE TABLE marts.t AS SELECT 1 AS x")
    limits = []

    def recording(*args, **kwargs):
        limits.append(args[2]["memory_limit"])
        return write_snapshot(*args, **kwargs)

    monkeypatch.setattr(publishing, "write_snapshot", recording)
    monkeypatch.setenv("DUCKDB_MEMORY_LIMIT", "4GiB")
    snapshot = publishing.build_analytics_snapshot()
    resource = FinegridResource(warehouse_path=str(warehouse), publish_dir=str(tmp_path / "p"))
    result = snapshot(finegrid=resource)
    assert limits == [SNAPSHOT_MEMORY] and result.metadata["tables"] == 1


def test_a_snapshot_clears_the_copies_a_killed_run_left(tmp_path):
    from orchestration.publish.snapshot import SNAPSHOT_NAME, write_snapshot

    warehouse = tmp_path / "w.duckdb"
    with duckdb.connect(str(warehouse)) as con:
        con.execute("CREATE SCHEMA marts; CREATE TABLE marts.t AS SELECT 1 AS x")
    publish = tmp_path / "publish"
    publish.mkdir()
    leftover = publish / f".{SNAPSHOT_NAME}.4242.tmp"  # a run killed while copying
    leftover.write_bytes(b"half a database")
    result = write_snapshot(warehouse, publish)
    assert result.tables == {"marts.t": 1}
    assert sorted(p.name for p in publish.iterdir()) == [".analytics", SNAPSHOT_NAME]
    assert sorted(p.name for p in (publish / ".analytics").iterdir()) == [
        "a.duckdb",
        "a.fingerprints.json",
    ]


def test_a_snapshot_holds_a_mart_view_as_a_table_without_the_schema_it_reads(tmp_path):
    """dbt names a view's tables in the warehouse's own catalog (``city.main.t`` for
    ``city.2025.duckdb``); the snapshot copies the view's rows, not its definition, and leaves
    the schema behind it out."""
    from orchestration.publish.snapshot import write_snapshot

    warehouse = tmp_path / "city.2025.duckdb"
    with duckdb.connect(str(warehouse)) as con:
        con.execute("CREATE SCHEMA intermediate; CREATE SCHEMA marts")
        con.execute("CREATE TABLE intermediate.days AS SELECT range AS d FROM range(3)")
        con.execute('CREATE VIEW marts.daily AS SELECT d FROM "city".intermediate.days')
    publish = tmp_path / "publish"
    result = write_snapshot(warehouse, publish)
    assert result.tables == {"marts.daily": 3}
    with duckdb.connect(str(result.path), read_only=True) as con:
        kinds = con.execute(
            "SELECT table_schema, table_name, table_type FROM information_schema.tables"
        ).fetchall()
    assert kinds == [("marts", "daily", "BASE TABLE")]


def test_a_snapshot_keeps_a_view_over_shared_tables_a_view_of_its_own_copies(tmp_path):
    """A mart view over a mart table (fct_hourly_load over fct_daily_load_profile), beside one
    over a view of it: both stay views in the snapshot, reading the snapshot's copy, also when
    the file is attached under another name; nothing names the warehouse any more."""
    from orchestration.publish.snapshot import write_snapshot

    warehouse = tmp_path / "city.2025.duckdb"
    with duckdb.connect(str(warehouse)) as con:
        con.execute("CREATE SCHEMA marts")
        con.execute("CREATE TABLE marts.days AS SELECT range AS d, [d, d + 1] AS h FROM range(3)")
        con.execute('CREATE VIEW marts.hours AS SELECT d, unnest(h) AS x FROM "city".marts.days')
        con.execute("CREATE VIEW marts.big_hours AS SELECT * FROM city.marts.hours WHERE x > 1")
    result = write_snapshot(warehouse, tmp_path / "publish")
    assert result.tables == {"marts.days": 3}
    assert result.views == ["marts.big_hours", "marts.hours"]  # listed, not counted
    moved = tmp_path / "elsewhere.duckdb"
    moved.write_bytes(result.path.read_bytes())
    with duckdb.connect() as con:
        con.execute(f"ATTACH '{moved}' AS analyst (READ_ONLY)")
        kinds = con.execute(
            "SELECT table_name, table_type FROM information_schema.tables "
            "WHERE table_catalog = 'analyst' ORDER BY 1"
        ).fetchall()
        rows = con.execute("SELECT sum(x) FROM analyst.marts.hours").fetchone()[0]
        big = con.execute("SELECT count(*) FROM analyst.marts.big_hours").fetchone()[0]
        sql = con.execute("SELECT string_agg(sql, ' ') FROM duckdb_views() WHERE NOT internal")
        text = sql.fetchone()[0]
    assert kinds == [("big_hours", "VIEW"), ("days", "BASE TABLE"), ("hours", "VIEW")]
    assert rows == 0 + 1 + 1 + 2 + 2 + 3 and big == 3
    assert "city" not in text


def _energy_warehouse(path: Path) -> Path:
    """A warehouse shaped like the platform's: days held in ``intermediate`` and shared
    through a mart view (copied as a table), a table without dates, and a view over it."""
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE SCHEMA intermediate; CREATE SCHEMA marts")
        con.execute(
            """CREATE TABLE intermediate.days AS
               SELECT 'c' || (i % 10) AS customer_id, DATE '2025-01-01' + (i // 10)::INTEGER AS day,
                      (i * 0.5)::DOUBLE AS kwh
               FROM range(900) AS r(i)"""  # 90 days: January to March 2025
        )
        con.execute("INSERT INTO intermediate.days VALUES ('c0', NULL, 1.0)")  # no date
        con.execute(f'CREATE VIEW marts.days AS SELECT * FROM "{path.stem}".intermediate.days')
        con.execute("CREATE TABLE marts.customers AS SELECT 'c' || range AS id FROM range(10)")
        con.execute(f'CREATE VIEW marts.ids AS SELECT id FROM "{path.stem}".marts.customers')
    return path


def _same_as_warehouse(
    snapshot: Path, warehouse: Path, tables: tuple[str, ...] = ("days", "customers", "ids")
) -> None:
    with duckdb.connect(str(snapshot), read_only=True) as con:
        con.execute(f"ATTACH '{warehouse}' (READ_ONLY)")  # as its views name it
        for table in tables:
            ours, theirs = f"marts.{table}", f'"{warehouse.stem}".marts.{table}'
            for a, b in ((ours, theirs), (theirs, ours)):
                missing = con.execute(f"SELECT * FROM {a} EXCEPT ALL SELECT * FROM {b}").fetchall()
                assert missing == [], (table, a, missing[:3])


def test_a_snapshot_rewrites_only_the_months_that_changed_in_the_copy_it_replaces(tmp_path):
    """Two copies take turns behind the name. Each run fingerprints the warehouse by month and
    rewrites in the copy it brings up to date only the months that differ from what that copy
    holds, which for the copy of two runs ago includes the previous run's changes."""
    from orchestration.publish.snapshot import write_snapshot

    warehouse = _energy_warehouse(tmp_path / "city.duckdb")
    publish = tmp_path / "publish"
    first = write_snapshot(warehouse, publish)
    assert first.rewritten == {"marts.customers": 10, "marts.days": 901}  # all: a new copy
    assert first.tables == {"marts.customers": 10, "marts.days": 901}
    assert first.views == ["marts.ids"]
    assert first.path.resolve() == publish / ".analytics" / "a.duckdb"
    second = write_snapshot(warehouse, publish)  # b: new as well
    assert second.rewritten == first.rewritten
    assert second.path.resolve() == publish / ".analytics" / "b.duckdb"
    _same_as_warehouse(second.path, warehouse)

    with duckdb.connect(str(warehouse)) as con:
        con.execute("UPDATE intermediate.days SET kwh = -1 WHERE day = DATE '2025-02-14'")
        con.execute("DELETE FROM intermediate.days WHERE day < DATE '2025-02-01'")  # January
        con.execute(
            "INSERT INTO intermediate.days "
            "SELECT 'c1', DATE '2025-04-01' + range::INTEGER, 2.0 FROM range(5)"  # April, new
        )
    third = write_snapshot(warehouse, publish)  # a again: it held January to March
    february = 280  # 28 days × 10 customers
    assert third.rewritten == {"marts.days": february + 5}
    assert third.path.resolve() == publish / ".analytics" / "a.duckdb"
    _same_as_warehouse(third.path, warehouse)

    fourth = write_snapshot(warehouse, publish)  # b, two runs old: the same months
    assert fourth.rewritten == {"marts.days": february + 5}
    _same_as_warehouse(fourth.path, warehouse)
    assert write_snapshot(warehouse, publish).rewritten == {}

    with duckdb.connect(str(warehouse)) as con:
        con.execute("ALTER TABLE marts.customers ADD COLUMN district VARCHAR DEFAULT 'd1'")
        con.execute("UPDATE intermediate.days SET kwh = 0 WHERE day IS NULL")
    changed = write_snapshot(warehouse, publish)
    assert changed.rewritten == {"marts.customers": 10, "marts.days": 1}  # new column: whole
    _same_as_warehouse(changed.path, warehouse)
    with duckdb.connect(str(changed.path), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM marts.ids").fetchone()[0] == 10
        kinds = con.execute(
            "SELECT table_name, table_type FROM information_schema.tables ORDER BY 1"
        ).fetchall()
    assert kinds == [("customers", "BASE TABLE"), ("days", "BASE TABLE"), ("ids", "VIEW")]

    with duckdb.connect(str(warehouse)) as con:  # every month: copied whole
        con.execute("UPDATE intermediate.days SET kwh = kwh + 1e-12")
    rebuilt = write_snapshot(warehouse, publish)
    # Every row of February to April and the dateless one; the copy of two runs ago had not
    # the new column either.
    assert rebuilt.rewritten == {"marts.customers": 10, "marts.days": 280 + 310 + 5 + 1}
    _same_as_warehouse(rebuilt.path, warehouse)


def _declared_warehouse(path: Path) -> Path:
    """Days shared through a view that adds an archive lookup and computes two columns from
    the others, as fct_daily_energy does: ten customers from January to March 2025, and an
    account no archive knows with five days of March."""
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE SCHEMA intermediate; CREATE SCHEMA marts")
        con.execute(
            """CREATE TABLE intermediate.days AS
               SELECT 'c' || (i % 10) AS customer_id, DATE '2025-01-01' + (i // 10)::INTEGER AS day,
                      (i * 0.5)::DOUBLE AS kwh, 'f1' AS source_file
               FROM range(900) AS r(i)
               UNION ALL
               SELECT 'x', DATE '2025-03-10' + i::INTEGER, 1.0, 'f1' FROM range(5) AS r(i)"""
        )
        con.execute("CREATE TABLE marts.customers AS SELECT 'c' || range AS id FROM range(10)")
        _days_view(con, path, "d.kwh > 100")
    return path


def _days_view(con: duckdb.DuckDBPyConnection, path: Path, is_high: str) -> None:
    con.execute(
        f"""CREATE OR REPLACE VIEW marts.days AS
            SELECT d.customer_id, d.day, date_trunc('month', d.day)::DATE AS month, d.kwh,
                   {is_high} AS is_high, c.id IS NOT NULL AS is_known, d.source_file
            FROM "{path.stem}".intermediate.days AS d
            LEFT JOIN "{path.stem}".marts.customers AS c ON c.id = d.customer_id"""
    )


def _declared(*computed: str) -> dict:
    from orchestration.publish.snapshot import RowHash

    return {"marts.days": RowHash(computed=computed)}


# All but what the view computes; and but source_file, to show what leaving a column out misses.
DECLARED = _declared("month", "is_high", "source_file")


def _rebuild_february(warehouse: Path, kwh: str) -> None:
    """What an incremental build does: the month's rows deleted and written again."""
    with duckdb.connect(str(warehouse)) as con:
        con.execute(
            f"""CREATE TEMP TABLE feb AS SELECT * REPLACE ({kwh} AS kwh)
                FROM intermediate.days WHERE day BETWEEN '2025-02-01' AND '2025-02-28';
                DELETE FROM intermediate.days WHERE day BETWEEN '2025-02-01' AND '2025-02-28';
                INSERT INTO intermediate.days SELECT * FROM feb"""
        )


def test_a_table_is_fingerprinted_by_the_columns_its_model_declares(tmp_path):
    """Hashing all columns but those the view computes from the others (the daily energy at
    100,000 accounts: 1.9 s against 4.9 s a run) still finds the months whose rows changed,
    those whose archive lookup changed, and all of them when the view computes its other
    columns otherwise. A column left out that the view does not compute is not seen: why only
    those it computes are to be left out."""
    from orchestration.publish.snapshot import read_fingerprints, write_snapshot

    warehouse = _declared_warehouse(tmp_path / "city.duckdb")
    publish, tables = tmp_path / "publish", ("days", "customers")

    def snapshot():
        result = write_snapshot(warehouse, publish, declared=DECLARED)
        _same_as_warehouse(result.path, warehouse, tables)
        return result

    assert snapshot().rewritten == {"marts.customers": 10, "marts.days": 905}  # a: new
    second = snapshot()  # b: new
    basis = read_fingerprints(second.path.resolve())["marts.days"].basis
    assert basis.startswith("hash(customer_id, day, kwh, is_known) of (customer_id VARCHAR, ")
    assert read_fingerprints(second.path.resolve())["marts.customers"].basis == "row"
    _rebuild_february(warehouse, "kwh")  # the same rows written again: nothing to copy
    assert snapshot().rewritten == {}
    _rebuild_february(warehouse, "kwh + 1")
    assert snapshot().rewritten == {"marts.days": 280}  # a
    assert snapshot().rewritten == {"marts.days": 280}  # b, two runs old
    with duckdb.connect(str(warehouse)) as con:  # the archive learns of x: March's lookup
        con.execute("INSERT INTO marts.customers VALUES ('x')")
    assert snapshot().rewritten == {"marts.customers": 11, "marts.days": 315}
    snapshot()
    with duckdb.connect(str(warehouse)) as con:  # the same columns, computed otherwise
        _days_view(con, warehouse, "d.kwh > 10")
    assert snapshot().rewritten == {"marts.days": 905}  # another basis: copied whole
    assert snapshot().rewritten == {"marts.days": 905}
    assert snapshot().rewritten == {}

    with duckdb.connect(str(warehouse)) as con:
        con.execute("UPDATE intermediate.days SET source_file = 'f2' WHERE day = '2025-01-05'")
    unseen = write_snapshot(warehouse, publish, declared=DECLARED)
    assert unseen.rewritten == {}
    with pytest.raises(AssertionError):
        _same_as_warehouse(unseen.path, warehouse, tables)
    assert write_snapshot(warehouse, publish).rewritten == {"marts.days": 905}  # whole rows


def test_a_view_of_stamped_rows_is_fingerprinted_by_its_stamps_and_what_it_joins(tmp_path):
    """The daily energy's declaration: the stamp of the build that wrote each day, with the
    archive lookup the view joins, which changes while the days stay as written (at 100,000
    accounts 0.6 s a run against 1.9-3.2 s for every column but two). Days written before
    the stamp existed have none, and are hashed alike until a build writes them again."""
    from orchestration.publish.snapshot import RowHash, read_fingerprints, write_snapshot

    warehouse = _declared_warehouse(tmp_path / "city.duckdb")
    stem = warehouse.stem
    with duckdb.connect(str(warehouse)) as con:  # the migration: a stamp column, empty
        con.execute("ALTER TABLE intermediate.days ADD COLUMN built_at TIMESTAMP")
        con.execute(
            f"""CREATE OR REPLACE VIEW marts.days AS
                SELECT d.customer_id, d.day, d.kwh, c.id IS NOT NULL AS is_known, d.built_at
                FROM "{stem}".intermediate.days AS d
                LEFT JOIN "{stem}".marts.customers AS c ON c.id = d.customer_id"""
        )
    declared = {"marts.days": RowHash(stamp="built_at", joined=("is_known",))}
    publish, tables = tmp_path / "publish", ("days", "customers")

    def snapshot():
        result = write_snapshot(warehouse, publish, declared=declared)
        _same_as_warehouse(result.path, warehouse, tables)
        return result

    snapshot()
    basis = read_fingerprints(snapshot().path.resolve())["marts.days"].basis
    assert basis.startswith("hash(built_at, is_known) of (customer_id VARCHAR, ")
    assert snapshot().rewritten == {}
    with duckdb.connect(str(warehouse)) as con:  # a build writes February again, stamped
        con.execute(
            "UPDATE intermediate.days SET kwh = kwh + 1, built_at = TIMESTAMP '2025-04-01 02:00'"
            " WHERE day BETWEEN '2025-02-01' AND '2025-02-28'"
        )
    assert snapshot().rewritten == {"marts.days": 280}  # a
    assert snapshot().rewritten == {"marts.days": 280}  # b, two runs old
    with duckdb.connect(str(warehouse)) as con:  # the archive learns of x: March's lookup
        con.execute("INSERT INTO marts.customers VALUES ('x')")
    assert snapshot().rewritten == {"marts.customers": 11, "marts.days": 315}
    assert snapshot().rewritten == {"marts.customers": 11, "marts.days": 315}
    assert snapshot().rewritten == {}


def test_month_files_of_a_declared_view_are_named_by_its_columns_and_definition(tmp_path):
    """A month file is named by its rows' fingerprint: of some columns, with the table's
    columns and the view's definition, which change the rows the same values make. A column
    added is hashed: only the columns left out are named."""
    from orchestration.publish.snapshot import RowHash, write_snapshot

    warehouse = _declared_warehouse(tmp_path / "city.duckdb")
    publish, tables = tmp_path / "publish", ("days", "customers")

    def snapshot():
        result = write_snapshot(warehouse, publish, file_rows=100, declared=DECLARED)
        _same_as_warehouse(result.path, warehouse, tables)
        return result

    snapshot()
    assert snapshot().rewritten == {"marts.customers": 10}  # the month files were there
    months = _month_files(publish)
    assert len(months) == 3
    with duckdb.connect(str(warehouse)) as con:
        _days_view(con, warehouse, "d.kwh > 10")
    assert snapshot().rewritten == {"marts.days": 905}
    assert len(set(_month_files(publish)) - set(months)) == 3  # beside b's, which it reads
    assert snapshot().rewritten == {}
    assert not set(_month_files(publish)) & set(months)
    with duckdb.connect(str(warehouse)) as con:  # stamped rows, and a column added
        con.execute(
            "CREATE TABLE marts.reads AS SELECT customer_id, day, "
            "TIMESTAMP '2025-04-01 02:00' AS built_at FROM intermediate.days"
        )
    declared = DECLARED | {"marts.reads": RowHash(stamp="built_at")}
    write_snapshot(warehouse, publish, file_rows=100, declared=declared)
    write_snapshot(warehouse, publish, file_rows=100, declared=declared)
    with duckdb.connect(str(warehouse)) as con:  # the same stamps, a new column
        con.execute("ALTER TABLE marts.reads ADD COLUMN meter_id VARCHAR DEFAULT 'm1'")
    added = write_snapshot(warehouse, publish, file_rows=100, declared=declared)
    assert added.rewritten == {"marts.reads": 905}
    _same_as_warehouse(added.path, warehouse, ("reads",))
    with duckdb.connect(str(warehouse)) as con:  # a build rewrites March, stamped
        con.execute("UPDATE marts.reads SET built_at = now() WHERE day >= '2025-03-01'")
    stamped = write_snapshot(warehouse, publish, file_rows=100, declared=declared)
    assert stamped.rewritten == {"marts.reads": 315}


def test_a_snapshot_refuses_columns_declared_for_what_it_cannot_fingerprint(tmp_path):
    from orchestration.publish.snapshot import RowHash, write_snapshot

    warehouse = _declared_warehouse(tmp_path / "city.duckdb")
    with pytest.raises(RuntimeError, match=r"\"marts\".\"days\" has no column \['kwh_sum'\]"):
        write_snapshot(warehouse, tmp_path / "a", declared=_declared("month", "kwh_sum"))
    with pytest.raises(RuntimeError, match=r"\['marts.weeks'\]: declared snapshot_fingerprint"):
        write_snapshot(warehouse, tmp_path / "b", declared={"marts.weeks": RowHash(stamp="at")})


def _month_files(publish: Path) -> list[str]:
    return sorted(p.name for p in (publish / ".analytics" / "months" / "marts.days").iterdir())


def test_a_big_table_is_kept_once_as_month_files_both_copies_read(tmp_path):
    """A table of ``file_rows`` or more with a date column is a view over one Parquet file per
    month, named by its fingerprint: the second copy writes none again, a changed month gets a
    new file, and a file goes when neither copy reads it. Its types read back as they were."""
    from orchestration.publish.snapshot import write_snapshot

    warehouse = _energy_warehouse(tmp_path / "city.duckdb")
    with duckdb.connect(str(warehouse)) as con:  # a count as HUGEINT, a code as ENUM
        con.execute("CREATE TYPE grade AS ENUM ('a', 'b')")
        con.execute(
            "CREATE TABLE marts.graded AS SELECT DATE '2025-01-01' + range::INTEGER AS day, "
            "'a'::grade AS grade, range::HUGEINT AS n FROM range(200)"
        )
    publish = tmp_path / "publish"
    first = write_snapshot(warehouse, publish, file_rows=100)
    assert first.rewritten == {"marts.customers": 10, "marts.days": 901, "marts.graded": 200}
    months = _month_files(publish)
    assert [m.split("-")[:2] for m in months] == [
        ["2025", "01"], ["2025", "02"], ["2025", "03"], ["undated", "1"]
    ]  # fmt: skip
    second = write_snapshot(warehouse, publish, file_rows=100)
    assert second.rewritten == {"marts.customers": 10, "marts.graded": 200}  # days: none
    assert _month_files(publish) == months
    with duckdb.connect(str(second.path), read_only=True) as con:
        kinds = dict(
            con.execute("SELECT table_name, table_type FROM information_schema.tables").fetchall()
        )
        types = con.execute("SELECT typeof(grade), typeof(n) FROM marts.graded LIMIT 1")
        assert types.fetchone() == ("ENUM('a', 'b')", "HUGEINT")
    # Parquet would not keep the ENUM and the HUGEINT: that table stays a table.
    tables = {"customers": "BASE TABLE", "graded": "BASE TABLE"}
    assert kinds == tables | {"days": "VIEW", "ids": "VIEW"}
    _same_as_warehouse(second.path, warehouse)

    with duckdb.connect(str(warehouse)) as con:
        con.execute("UPDATE intermediate.days SET kwh = -1 WHERE day = DATE '2025-02-14'")
    reader = duckdb.connect(str(second.path), read_only=True)  # the previous snapshot's reader
    try:
        before = reader.execute("SELECT sum(kwh) FROM marts.days").fetchone()[0]
        third = write_snapshot(warehouse, publish, file_rows=100)  # a
        assert third.rewritten == {"marts.days": 280}
        assert reader.execute("SELECT sum(kwh) FROM marts.days").fetchone()[0] == before
    finally:
        reader.close()
    _same_as_warehouse(third.path, warehouse)
    assert len(_month_files(publish)) == len(months) + 1  # b still reads the old February
    (publish / ".analytics" / "months" / "marts.days" / ".4242.tmp").mkdir()  # a killed run's
    fourth = write_snapshot(warehouse, publish, file_rows=100)  # b
    assert fourth.rewritten == {}  # the new February's file was there
    after = _month_files(publish)
    added = set(after) - set(months)
    assert len(after) == len(months) and len(added) == 1  # the old February's went
    assert next(iter(added)).startswith("2025-02-")
    _same_as_warehouse(fourth.path, warehouse)


def test_a_snapshot_copy_left_without_fingerprints_is_not_trusted(tmp_path):
    """A run killed while updating a copy leaves it without its fingerprints: the next run
    does not guess what it holds but writes it whole."""
    from orchestration.publish.snapshot import write_snapshot

    warehouse = _energy_warehouse(tmp_path / "city.duckdb")
    publish = tmp_path / "publish"
    write_snapshot(warehouse, publish)
    write_snapshot(warehouse, publish)
    copy = publish / ".analytics" / "a.duckdb"
    copy.chmod(0o644)
    with duckdb.connect(str(copy)) as con:  # half an update, then killed
        con.execute("DELETE FROM marts.days WHERE day >= DATE '2025-03-01'")
    (publish / ".analytics" / "a.fingerprints.json").unlink()
    result = write_snapshot(warehouse, publish)
    assert result.path.resolve() == copy
    assert result.rewritten == {"marts.customers": 10, "marts.days": 901}
    _same_as_warehouse(result.path, warehouse)


def test_a_snapshot_copy_from_before_the_month_files_is_written_anew(tmp_path):
    """A copy whose fingerprints predate the month files holds its big tables itself: it is
    written anew, not emptied in place (DuckDB keeps most of a file's freed blocks)."""
    from orchestration.publish.snapshot import write_snapshot

    warehouse = _energy_warehouse(tmp_path / "city.duckdb")
    publish = tmp_path / "publish"
    write_snapshot(warehouse, publish)  # a: days as a table
    write_snapshot(warehouse, publish)
    prints = publish / ".analytics" / "a.fingerprints.json"
    records = json.loads(prints.read_text("utf-8"))
    for record in records.values():
        del record["in_files"]
    prints.write_text(json.dumps(records), "utf-8")
    result = write_snapshot(warehouse, publish, file_rows=100)
    # Written whole: the customers too, which the copy held unchanged.
    assert result.rewritten == {"marts.customers": 10, "marts.days": 901}
    _same_as_warehouse(result.path, warehouse)


def test_a_snapshot_copy_an_analyst_still_holds_is_written_anew_beside_the_reader(tmp_path):
    """An analyst who opened the snapshot two runs ago still reads it (a lock DuckDB keeps
    across processes): the run writes that copy's name afresh and the reader keeps its file."""
    import subprocess
    import sys

    from orchestration.publish.snapshot import write_snapshot

    warehouse = _energy_warehouse(tmp_path / "city.duckdb")
    publish = tmp_path / "publish"
    first = write_snapshot(warehouse, publish).path.resolve()
    write_snapshot(warehouse, publish)
    with duckdb.connect(str(warehouse)) as con:
        con.execute("UPDATE intermediate.days SET kwh = 7 WHERE day = DATE '2025-03-03'")
    reader = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys\n"
            f"con = duckdb.connect({str(first)!r}, read_only=True)\n"
            "print(con.execute('SELECT sum(kwh) FROM marts.days').fetchone()[0], flush=True)\n"
            "sys.stdin.readline()\n"
            "print(con.execute('SELECT sum(kwh) FROM marts.days').fetchone()[0], flush=True)\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        before = reader.stdout.readline().strip()
        with pytest.raises(duckdb.IOException):  # the reader's lock is real
            duckdb.connect(str(first)).close()
        result = write_snapshot(warehouse, publish)
        reader.stdin.write("\n")
        reader.stdin.flush()
        assert reader.stdout.readline().strip() == before
    finally:
        reader.kill()
        reader.wait()
    assert result.path.resolve() == first  # a new file under the name, written whole
    assert result.rewritten == {"marts.customers": 10, "marts.days": 901}
    _same_as_warehouse(result.path, warehouse)

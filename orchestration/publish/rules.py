"""The publishing rules users change, kept as data in ``business_rules/`` and validated on load.

``tags.yaml`` (the tag library), ``campaigns.yaml`` (campaigns and channels),
``service_plans.yaml`` (one service package per segment) and ``account_managers.csv``. A bad file
fails with its path and the field at fault — for campaigns, the campaign's code too — never
later inside a run. Conditions may only name catalogued fields with a fixed set of operators,
and their values are bound as literals, so a rule file cannot inject code or SQL.
"""

from __future__ import annotations

import csv
import functools
from pathlib import Path
from typing import Any

from data_contracts import load_contracts
from ml.config import (
    CONDITIONS_SCHEMA,
    ConfigError,
    bookkeeping_columns,
    check_conditions,
    fail,
    feature_catalogue,
    read_validated,
)
from ml.config import load_config as load_model_config
from ml.mapping import reason_fields

RULES_DIR = Path(__file__).resolve().parents[2] / "business_rules"
SLA_SEED = Path(__file__).resolve().parents[2] / "dbt_project/seeds/sla_targets.csv"

# Fields a tag or campaign may test besides the customer features: the models' outputs and
# the customer's special group label.
MODEL_FIELDS = ("segment_code", "segment_confidence", "risk_grade", "risk_probability")
EXTRA_FIELDS = (*MODEL_FIELDS, "special_group")
DIMENSIONS = ("usage", "behaviour", "demand", "credit", "segment")
EXCLUSIONS = ("closed_or_suspended", "recent_complaint", "high_risk", "recently_contacted")
CAPACITY_SCOPES = ("district", "account_manager", "total")
CODE = {"type": "string", "pattern": "^[A-Z][A-Z0-9_]{2,40}$"}
_NAME = {"type": "string", "minLength": 1}
_CODES = {"type": "array", "items": _NAME, "uniqueItems": True}

_SCHEMAS: dict[str, dict] = {
    "tags": {
        "type": "object",
        "required": ["version", "owner", "tags"],
        "additionalProperties": False,
        "properties": {
            "version": _NAME,
            "owner": _NAME,
            "tags": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["code", "zh", "en", "dimension", "when"],
                    "additionalProperties": False,
                    "properties": {
                        "code": CODE,
                        "zh": _NAME,
                        "en": _NAME,
                        "dimension": {"enum": list(DIMENSIONS[:-1])},
                        "owner": _NAME,
                        "when": {**CONDITIONS_SCHEMA, "minItems": 1},
                        "value": _NAME,
                    },
                },
            },
        },
    },
    "campaigns": {
        "type": "object",
        "required": [
            "version",
            "recent_complaint_days",
            "contact_cooldown_months",
            "high_risk_grades",
            "channels",
            "campaigns",
        ],
        "additionalProperties": False,
        "properties": {
            "version": _NAME,
            "recent_complaint_days": {"type": "integer", "minimum": 1},
            "contact_cooldown_months": {"type": "integer", "minimum": 0},
            "high_risk_grades": {**_CODES, "minItems": 1},
            "channels": {
                "type": "object",
                "minProperties": 1,
                "additionalProperties": {
                    "type": "object",
                    "required": ["zh", "contact_fields"],
                    "additionalProperties": False,
                    "properties": {"zh": _NAME, "contact_fields": _CODES},
                },
            },
            "campaigns": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": [
                        "code",
                        "zh",
                        "en",
                        "kind",
                        "channel",
                        "eligibility",
                        "exclusions",
                        "score",
                        "capacity",
                        "reason",
                    ],
                    "additionalProperties": False,
                    "properties": {
                        "code": CODE,
                        "zh": _NAME,
                        "en": _NAME,
                        "kind": {"enum": ["upsell", "service", "collection"]},
                        "channel": _NAME,
                        "eligibility": {
                            "type": "object",
                            "minProperties": 1,
                            "additionalProperties": False,
                            "properties": {
                                "segments": {**_CODES, "minItems": 1},
                                "tags_all": _CODES,
                                "tags_any": _CODES,
                                "tags_none": _CODES,
                                "when": CONDITIONS_SCHEMA,
                            },
                        },
                        "exclusions": {**_CODES, "items": {"enum": list(EXCLUSIONS)}},
                        "score": {
                            "type": "array",
                            "minItems": 1,
                            "items": {
                                "type": "object",
                                "required": ["field", "weight"],
                                "additionalProperties": False,
                                "properties": {
                                    "field": _NAME,
                                    "weight": {"type": "number", "not": {"const": 0}},
                                },
                            },
                        },
                        "capacity": {
                            "type": "object",
                            "required": ["per", "limit"],
                            "additionalProperties": False,
                            "properties": {
                                "per": {"enum": list(CAPACITY_SCOPES)},
                                "limit": {"type": "integer", "minimum": 1},
                            },
                        },
                        "reason": _NAME,
                    },
                },
            },
        },
    },
    "service_plans": {
        "type": "object",
        "required": ["version", "plans"],
        "additionalProperties": False,
        "properties": {
            "version": _NAME,
            "plans": {
                "type": "object",
                "minProperties": 1,
                "additionalProperties": {
                    "type": "object",
                    "required": [
                        "code",
                        "zh",
                        "en",
                        "account_manager",
                        "reports",
                        "outreach_channels",
                        "service_channels",
                        "response_minutes",
                        "repair_arrival_minutes",
                    ],
                    "additionalProperties": False,
                    "properties": {
                        "code": _NAME,
                        "zh": _NAME,
                        "en": _NAME,
                        "account_manager": {"type": "boolean"},
                        "reports": {**_CODES, "minItems": 1},
                        "outreach_channels": {**_CODES, "minItems": 1},
                        "service_channels": {**_CODES, "minItems": 1},
                        "response_minutes": {"type": "integer", "minimum": 1},
                        "repair_arrival_minutes": {
                            "type": "object",
                            "required": ["urban", "rural"],
                            "additionalProperties": False,
                            "properties": {
                                "urban": {"type": "integer", "minimum": 1},
                                "rural": {"type": "integer", "minimum": 1},
                            },
                        },
                    },
                },
            },
        },
    },
}


def customer_fields() -> set[str]:
    """Every field a tag or campaign may name: the catalogued features (bookkeeping aside) and
    the model outputs."""
    return (set(feature_catalogue()) - bookkeeping_columns()) | set(EXTRA_FIELDS)


def contact_masks() -> dict[str, str]:
    """Vault columns a target list may carry → their mask (from the archive's contract)."""
    archive = load_contracts()["mkt__cons_archive"]
    return {c.name: c.contact_mask for c in archive.columns if c.contact_mask}


def contact_labels() -> dict[str, str]:
    """Vault columns a target list may carry → their business name (户名, 联系电话, …)."""
    archive = load_contracts()["mkt__cons_archive"]
    return {c.name: c.business_name or c.name for c in archive.columns if c.contact_mask}


def _read(path: Path, name: str) -> dict[str, Any]:
    return read_validated(path, _SCHEMAS[name], _campaign_where if name == "campaigns" else None)


def _campaign_where(doc: dict, parts: list) -> str:
    """'campaign TOU_PACKAGE: capacity/limit' rather than 'campaigns/0/capacity/limit'."""
    if parts[:1] != ["campaigns"] or len(parts) < 2:
        return ""
    entry = doc["campaigns"][parts[1]]
    code = entry.get("code", f"#{parts[1]}") if isinstance(entry, dict) else f"#{parts[1]}"
    return f"campaign {code}: " + ("/".join(map(str, parts[2:])) or "(the entry)")


def load_tags(path: Path | None = None) -> dict[str, Any]:
    """The tag library, with one `segment` tag per business segment of the segment mapping."""
    path = path or RULES_DIR / "tags.yaml"
    doc = _read(path, "tags")
    allowed = customer_fields()
    seen: set[str] = set()
    for i, tag in enumerate(doc["tags"]):
        where = f"tags/{i} ({tag['code']})"
        if tag["code"] in seen:
            raise fail(path, f"{where}/code", f"{tag['code']!r} is defined twice")
        seen.add(tag["code"])
        check_conditions(path, f"{where}/when", tag["when"], allowed)
        tag.setdefault("value", tag["when"][0]["field"])
        tag.setdefault("owner", doc["owner"])
        if tag["value"] not in allowed:
            raise fail(path, f"{where}/value", f"{tag['value']!r} is no catalogued field")
    mapping = load_model_config("segment_mapping")
    for code, seg in mapping["segments"].items():
        doc["tags"].append(
            {
                "code": f"SEG_{code.upper()}",
                "zh": seg["zh"],
                "en": code.replace("_", " "),
                "dimension": "segment",
                "owner": doc["owner"],
                "when": [{"field": "segment_code", "op": "eq", "value": code}],
                "value": "segment_confidence",
            }
        )
    doc["segment_mapping_version"] = mapping["version"]
    return doc


def load_campaigns(path: Path | None = None, tags: dict | None = None) -> dict[str, Any]:
    """Campaign definitions, checked against the tag library, segments, fields and channels."""
    path = path or RULES_DIR / "campaigns.yaml"
    doc = _read(path, "campaigns")
    tag_codes = {t["code"] for t in (tags or load_tags())["tags"]}
    segments = set(load_model_config("segment_mapping")["segments"])
    allowed = customer_fields()
    masks = contact_masks()
    for name, channel in doc["channels"].items():
        for field in channel["contact_fields"]:
            if field not in masks:
                raise fail(
                    path,
                    f"channels/{name}/contact_fields",
                    f"{field!r} is not a contact field of the archive contract ({sorted(masks)})",
                )
    seen: set[str] = set()
    for campaign in doc["campaigns"]:
        code = campaign["code"]
        where = f"campaign {code}"
        if code in seen:
            raise fail(path, f"{where}: code", "defined twice")
        seen.add(code)
        if campaign["channel"] not in doc["channels"]:
            raise fail(
                path,
                f"{where}: channel",
                f"{campaign['channel']!r} is not one of {sorted(doc['channels'])}",
            )
        rules = campaign["eligibility"]
        for segment in rules.get("segments", []):
            if segment not in segments:
                raise fail(path, f"{where}: eligibility/segments", f"{segment!r} is no segment")
        for key in ("tags_all", "tags_any", "tags_none"):
            for tag in rules.get(key, []):
                if tag not in tag_codes:
                    raise fail(path, f"{where}: eligibility/{key}", f"{tag!r} is no tag")
        check_conditions(path, f"{where}: eligibility/when", rules.get("when", []), allowed)
        for j, part in enumerate(campaign["score"]):
            if part["field"] not in allowed:
                raise fail(path, f"{where}: score/{j}/field", f"{part['field']!r} is unknown")
        if campaign["kind"] == "upsell" and "high_risk" not in campaign["exclusions"]:
            raise fail(path, f"{where}: exclusions", "an upsell campaign must exclude high_risk")
        for field in reason_fields(campaign["reason"]) - allowed:
            raise fail(path, f"{where}: reason", f"{{{field}}} is no catalogued field")
    return doc


def tag_fields(library: dict) -> set[str]:
    """The fields the tag library reads."""
    return {c["field"] for t in library["tags"] for c in t["when"]} | {
        t["value"] for t in library["tags"]
    }


def campaign_fields(rules: dict) -> set[str]:
    """The fields the campaigns read: conditions, scores and reasons."""
    fields: set[str] = set()
    for c in rules["campaigns"]:
        fields |= {x["field"] for x in c["eligibility"].get("when", [])}
        fields |= {x["field"] for x in c["score"]} | reason_fields(c["reason"])
    return fields


def sla_targets(path: Path = SLA_SEED) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [{**r, "target_minutes": int(r["target_minutes"])} for r in csv.DictReader(f)]


def load_service_plans(path: Path | None = None, campaigns: dict | None = None) -> dict[str, Any]:
    """One plan per business segment; response targets no looser than the standard SLA."""
    path = path or RULES_DIR / "service_plans.yaml"
    doc = _read(path, "service_plans")
    segments = set(load_model_config("segment_mapping")["segments"])
    channels = set((campaigns or load_campaigns())["channels"])
    if missing := sorted(segments - set(doc["plans"])):
        raise fail(path, "plans", f"no plan for segment(s) {missing}")
    if extra := sorted(set(doc["plans"]) - segments):
        raise fail(path, "plans", f"{extra} are no segments of the segment mapping")
    standard = {
        (t["order_type_en"], t["area_type"], t["measure"]): t["target_minutes"]
        for t in sla_targets()
    }
    limits = {
        "response_minutes": standard[("service request", "all", "response")],
        "repair_arrival_minutes/urban": standard[("repair", "urban", "arrival")],
        "repair_arrival_minutes/rural": standard[("repair", "rural", "arrival")],
    }
    for segment, plan in doc["plans"].items():
        for ch in plan["outreach_channels"]:
            if ch not in channels:
                raise fail(path, f"plans/{segment}/outreach_channels", f"{ch!r} is no channel")
        promised = {
            "response_minutes": plan["response_minutes"],
            "repair_arrival_minutes/urban": plan["repair_arrival_minutes"]["urban"],
            "repair_arrival_minutes/rural": plan["repair_arrival_minutes"]["rural"],
        }
        for key, minutes in promised.items():
            if minutes > limits[key]:
                raise fail(
                    path,
                    f"plans/{segment}/{key}",
                    f"{minutes} min is looser than the standard {limits[key]} min "
                    f"({SLA_SEED.name})",
                )
    return doc


def load_account_managers(path: Path | None = None) -> list[dict[str, str]]:
    """The account-manager roster: manager_id and district_code, each district at most once
    per manager."""
    path = path or RULES_DIR / "account_managers.csv"
    with path.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows or set(rows[0]) != {"manager_id", "district_code"}:
        raise ConfigError(f"{path}: needs the columns manager_id, district_code")
    seen: set[str] = set()
    for line, row in enumerate(rows, start=2):
        if not row["manager_id"] or not row["district_code"].isdigit():
            raise ConfigError(f"{path}: line {line}: empty manager_id or bad district_code")
        if row["manager_id"] in seen:
            raise ConfigError(f"{path}: line {line}: manager {row['manager_id']} listed twice")
        seen.add(row["manager_id"])
    return rows


@functools.cache
def default_rules() -> dict[str, Any]:
    """All publishing rules from business_rules/, validated (cached per process)."""
    tags = load_tags()
    campaigns = load_campaigns(tags=tags)
    return {
        "tags": tags,
        "campaigns": campaigns,
        "service_plans": load_service_plans(campaigns=campaigns),
        "account_managers": load_account_managers(),
    }

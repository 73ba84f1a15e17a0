"""The business rules of the models, kept as data in ``ml/config/*.yaml`` and validated on load.

A bad file fails with its path and the field at fault, never later inside a model.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import yaml

CONFIG_DIR = Path(__file__).resolve().parent / "config"
FEATURES_YAML = (
    Path(__file__).resolve().parents[1] / "dbt_project/models/marts/features/_features__models.yml"
)
OPERATORS = ("eq", "ne", "in", "ge", "gt", "le", "lt")


class ConfigError(ValueError):
    """A rules file that is missing, malformed or names something unknown."""


_NAME = {"type": "string", "minLength": 1}
# A list of conditions `{field, op, value}`, all of which must hold (shared with the tag and
# campaign rules in business_rules/).
CONDITIONS_SCHEMA = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["field", "op", "value"],
        "additionalProperties": False,
        "properties": {"field": _NAME, "op": {"enum": list(OPERATORS)}, "value": {}},
    },
}
_SCHEMAS: dict[str, dict] = {
    "segmentation": {
        "type": "object",
        "required": [
            "version",
            "seed",
            "retrain_every_months",
            "k_range",
            "populations",
            "features",
        ],
        "properties": {
            "version": _NAME,
            "seed": {"type": "integer"},
            "retrain_every_months": {"type": "integer", "minimum": 1, "maximum": 12},
            "k_range": {
                "type": "array",
                "items": {"type": "integer", "minimum": 2},
                "minItems": 2,
                "maxItems": 2,
            },
            "bootstrap_rounds": {"type": "integer", "minimum": 2},
            "minibatch_above": {"type": "integer", "minimum": 1},
            "silhouette_sample": {"type": "integer", "minimum": 100},
            "populations": {
                "type": "object",
                "minProperties": 1,
                "additionalProperties": {
                    "type": "object",
                    "required": ["elec_type_codes"],
                    "properties": {"elec_type_codes": {"type": "array", "items": _NAME}},
                },
            },
            "features": {
                "type": "array",
                "minItems": 2,
                "items": {
                    "type": "object",
                    "required": ["name"],
                    "additionalProperties": False,
                    "properties": {
                        "name": _NAME,
                        "transform": {"enum": ["log1p", "none"]},
                        "weight": {"type": "number", "exclusiveMinimum": 0},
                    },
                },
            },
        },
        "additionalProperties": False,
    },
    "segment_mapping": {
        "type": "object",
        "required": ["version", "segments", "default", "rules"],
        "additionalProperties": False,
        "properties": {
            "version": _NAME,
            "segments": {
                "type": "object",
                "minProperties": 1,
                "additionalProperties": {
                    "type": "object",
                    "required": ["zh"],
                    "properties": {"zh": _NAME, "service": _NAME},
                },
            },
            "default": _NAME,
            "rules": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["segment", "source", "when", "reason"],
                    "additionalProperties": False,
                    "properties": {
                        "segment": _NAME,
                        "source": {"enum": ["risk", "attribute", "cluster"]},
                        "reason": _NAME,
                        "when": CONDITIONS_SCHEMA,
                    },
                },
            },
        },
    },
    "risk": {
        "type": "object",
        "required": [
            "version",
            "seed",
            "label",
            "retrain_every_months",
            "boosting",
            "grades",
            "features",
            "gate",
        ],
        "additionalProperties": False,
        "properties": {
            "version": _NAME,
            "seed": {"type": "integer"},
            "min_history_months": {"type": "integer", "minimum": 0},
            "retrain_every_months": {"type": "integer", "minimum": 1, "maximum": 12},
            "baseline_max_rows": {"type": "integer", "minimum": 1000},
            "boosting": {
                "type": "object",
                "required": ["learning_rate", "max_iter"],
                "additionalProperties": False,
                "properties": {
                    "learning_rate": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                    "max_iter": {"type": "integer", "minimum": 1},
                    "max_rows": {"type": "integer", "minimum": 1000},
                },
            },
            "label": {
                "type": "object",
                "required": ["days_overdue", "horizon_months"],
                "properties": {
                    "days_overdue": {"type": "integer", "minimum": 1},
                    "horizon_months": {"type": "integer", "minimum": 1},
                },
            },
            "grades": {
                "type": "array",
                "minItems": 2,
                "items": {
                    "type": "object",
                    "required": ["grade", "below"],
                    "properties": {"grade": _NAME, "below": {"type": "number"}},
                },
            },
            "features": {"type": "array", "minItems": 2, "items": _NAME},
            "gate": {
                "type": "object",
                "required": [
                    "min_auc",
                    "min_tree_fidelity",
                    "min_segment_share",
                    "max_segment_share",
                    "max_segment_change_share",
                ],
                "additionalProperties": {"type": "number", "minimum": 0, "maximum": 1},
            },
        },
    },
}


@functools.cache
def feature_catalogue() -> dict[str, dict[str, Any]]:
    """Every column of marts.customer_features: Chinese name, unit, dimension, meaning."""
    doc = yaml.safe_load(FEATURES_YAML.read_text("utf-8"))
    model = next(m for m in doc["models"] if m["name"] == "customer_features")
    return {
        c["name"]: {
            "zh": c["meta"]["zh"],
            "unit": c["meta"].get("unit"),
            "dimension": c["meta"].get("dimension"),
            "description": c["description"],
        }
        for c in model["columns"]
    }


def bookkeeping_columns() -> set[str]:
    """The columns of marts.customer_features that are not features (dimension ``lineage``:
    inputs_hash): no rule may name them, and two builds need not agree on them."""
    return {n for n, c in feature_catalogue().items() if c["dimension"] == "lineage"}


def fail(path: Path, where: str, message: str) -> ConfigError:
    return ConfigError(f"{path}: {where}: {message}")


def read_validated(
    path: Path, schema: dict, where: Callable[[Any, list], str] | None = None
) -> Any:
    """A YAML file checked against a JSON schema; the first error names the file and the field
    (``where`` may name it better than the path of keys, e.g. by a campaign's code)."""
    try:
        doc = yaml.safe_load(path.read_text("utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot be read as YAML: {exc}") from exc
    errors = sorted(
        jsonschema.Draft202012Validator(schema).iter_errors(doc),
        key=lambda e: list(e.absolute_path),
    )
    if errors:
        e = errors[0]
        parts = list(e.absolute_path)
        location = where(doc, parts) if where else ""
        raise fail(path, location or "/".join(map(str, parts)) or "(top level)", e.message)
    return doc


def load_config(name: str, path: Path | None = None) -> dict[str, Any]:
    """Load and validate one rules file (``segmentation``, ``segment_mapping`` or ``risk``)."""
    path = path or CONFIG_DIR / f"{name}.yaml"
    doc = read_validated(path, _SCHEMAS[name])
    catalogue = feature_catalogue()
    if name == "segmentation":
        for i, f in enumerate(doc["features"]):
            if f["name"] not in catalogue:
                raise fail(path, f"features/{i}/name", f"{f['name']!r} is no customer feature")
        lo, hi = doc["k_range"]
        if lo > hi:
            raise fail(path, "k_range", f"{lo} > {hi}")
    elif name == "risk":
        for i, f in enumerate(doc["features"]):
            if f not in catalogue:
                raise fail(path, f"features/{i}", f"{f!r} is no customer feature")
        bounds = [g["below"] for g in doc["grades"]]
        if bounds != sorted(bounds) or bounds[-1] <= 1:
            raise fail(path, "grades", "bounds must rise and the last must exceed 1")
    else:
        _check_mapping(path, doc, catalogue)
    return doc


# Fields a mapping rule may test besides the customer features.
MAPPING_FIELDS = {"risk_grade", "risk_probability", "cluster_id"}


def _check_mapping(path: Path, doc: dict, catalogue: dict) -> None:
    segments = doc["segments"]
    if doc["default"] not in segments:
        raise fail(path, "default", f"{doc['default']!r} is not a declared segment")
    for i, rule in enumerate(doc["rules"]):
        if rule["segment"] not in segments:
            raise fail(path, f"rules/{i}/segment", f"{rule['segment']!r} is not declared")
        allowed = set(catalogue) | MAPPING_FIELDS | {f"cluster.{f}" for f in catalogue}
        check_conditions(path, f"rules/{i}/when", rule["when"], allowed)


def check_conditions(path: Path, where: str, when: list[dict], allowed: set[str]) -> None:
    """Every condition names an allowed field and gives its operator a value of the right kind."""
    for j, cond in enumerate(when):
        if cond["field"] not in allowed:
            raise fail(path, f"{where}/{j}/field", f"{cond['field']!r} is no catalogued field")
        is_list = isinstance(cond["value"], list)
        if (cond["op"] == "in") != is_list:
            need = "a list" if cond["op"] == "in" else "a single value"
            raise fail(path, f"{where}/{j}/value", f"{cond['op']!r} needs {need}")
        if cond["op"] in ("ge", "gt", "le", "lt") and not isinstance(cond["value"], int | float):
            raise fail(path, f"{where}/{j}/value", f"{cond['op']!r} needs a number")

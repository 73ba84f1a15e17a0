"""Load the ODCS v3 data contracts of the source extracts.

The YAML files under ``data_contracts/extracts/`` are the single description of every landing-zone
extract: where its files lie, how they are encoded, which columns they carry, their types, which
are required, their allowed values and patterns, and which hold personal data. Ingestion parses
and checks rows from these objects; the simulator writes its columns in the order they give.

Every file is validated on load against the official ODCS JSON schema (shipped by the
``open-data-contract-standard`` package) and against the few conventions of this project, and a
bad file fails with its path and the offending field named.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

CONTRACT_DIR = Path(__file__).parent / "extracts"

# Physical types a raw column may have: the DuckDB types ingestion knows how to check.
PHYSICAL_TYPES = re.compile(r"^(VARCHAR|INTEGER|BIGINT|DOUBLE|DATE|TIMESTAMP|DECIMAL\(\d+,\d+\))$")
FORMATS = {"csv", "parquet", "jsonl"}
ENCODINGS = {"GBK": "gbk", "UTF-8": "utf-8", "UTF-8-BOM": "utf-8-sig"}
PII_HANDLING = {"vault", "redact"}
CONTACT_MASKS = {"name", "phone", "address"}


class ContractError(ValueError):
    """A contract file that is not valid; the message names the file and the field."""


@dataclass(frozen=True)
class DerivedColumn:
    """A non-identifying column computed from a personal-data column before it leaves."""

    name: str
    rule: str


@dataclass(frozen=True)
class Column:
    name: str
    physical_type: str
    logical_type: str
    required: bool = False
    pattern: str | None = None
    enum: tuple[str, ...] = ()
    enum_labels: tuple[tuple[str, str], ...] = ()  # (value, label) where a label is given
    minimum: float | None = None
    maximum: float | None = None
    business_name: str | None = None
    description: str | None = None
    pii: str | None = None  # "vault": moved to the vault; "redact": patterns masked in place
    derived: tuple[DerivedColumn, ...] = ()
    # How a vault column is masked when a target list carries it without needing it (name,
    # phone, address); a column without one is never published (identity numbers).
    contact_mask: str | None = None


@dataclass(frozen=True)
class Contract:
    """One source extract as its contract describes it."""

    path: Path
    id: str
    version: str
    system: str
    extract: str
    file_format: str
    encoding: str | None  # Python codec name, for text formats
    delimiter: str | None
    quote: str | None
    null_values: tuple[str, ...]
    landing_glob: str
    raw_table: str  # "raw.<system>__<extract>"
    business_key: tuple[str, ...]
    business_name: str | None
    columns: tuple[Column, ...] = field(default_factory=tuple)
    purpose: str | None = None
    latency_days: int | None = None  # slaProperties latency: the longest wait for a new load
    # slaProperties availability: a month's file is due by 08:00 on this day of the next month
    due_day: int | None = None

    @property
    def name(self) -> str:
        """``<system>__<extract>``: the raw table's and the Dagster asset's name."""
        return f"{self.system}__{self.extract}"

    @property
    def folder(self) -> str:
        """The extract's folder relative to the landing zone."""
        return f"{self.system}/{self.extract}"

    @property
    def extension(self) -> str:
        return self.file_format  # the formats' file endings are their names

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def required_columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.required)

    @property
    def pii_columns(self) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if c.pii)

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"{self.name} has no column {name!r}")


@functools.cache
def _odcs_validator() -> jsonschema.Validator:
    schema = json.loads(
        resources.files("open_data_contract_standard").joinpath("schema.json").read_text("utf-8")
    )
    return jsonschema.Draft201909Validator(schema)


def _custom(props: list[dict[str, Any]] | None) -> dict[str, Any]:
    return {p["property"]: p["value"] for p in props or []}


def _fail(path: Path, where: str, message: str) -> ContractError:
    return ContractError(f"{path}: {where}: {message}")


def _parse_column(path: Path, where: str, prop: dict[str, Any]) -> Column:
    physical = prop.get("physicalType", "")
    if not PHYSICAL_TYPES.match(physical):
        raise _fail(path, f"{where}.physicalType", f"unsupported physical type {physical!r}")
    options = prop.get("logicalTypeOptions") or {}
    pattern = options.get("pattern")
    if pattern is not None:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise _fail(path, f"{where}.logicalTypeOptions.pattern", str(exc)) from exc
    custom = _custom(prop.get("customProperties"))
    pii = custom.get("pii")
    if pii is not None and pii not in PII_HANDLING:
        raise _fail(path, f"{where}.customProperties.pii", f"{pii!r} is not one of {PII_HANDLING}")
    derived = tuple(
        DerivedColumn(name=d["name"], rule=d["rule"]) for d in custom.get("derivedColumns", [])
    )
    if derived and pii != "vault":
        raise _fail(path, f"{where}.customProperties.derivedColumns", "only for pii: vault columns")
    contact_mask = custom.get("contactMask")
    if contact_mask is not None and (pii != "vault" or contact_mask not in CONTACT_MASKS):
        raise _fail(
            path,
            f"{where}.customProperties.contactMask",
            f"{contact_mask!r}: only for pii: vault columns, one of {sorted(CONTACT_MASKS)}",
        )
    return Column(
        name=prop["name"],
        physical_type=physical,
        logical_type=prop.get("logicalType", "string"),
        required=bool(prop.get("required", False)),
        pattern=pattern,
        enum=tuple(str(e["value"]) for e in prop.get("enum", [])),
        enum_labels=tuple(
            (str(e["value"]), str(e["label"])) for e in prop.get("enum", []) if "label" in e
        ),
        minimum=options.get("minimum"),
        maximum=options.get("maximum"),
        business_name=prop.get("businessName"),
        description=prop.get("description"),
        pii=pii,
        derived=derived,
        contact_mask=contact_mask,
    )


def load_contract(path: Path) -> Contract:
    """Parse and validate one contract file."""
    try:
        doc = yaml.safe_load(path.read_text("utf-8"))
    except yaml.YAMLError as exc:
        raise ContractError(f"{path}: not valid YAML: {exc}") from exc
    errors = sorted(_odcs_validator().iter_errors(doc), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        where = "/".join(map(str, e.absolute_path)) or "(top level)"
        raise _fail(path, where, f"does not follow the ODCS schema: {e.message}")

    servers = [s for s in doc.get("servers", []) if s.get("server") == "landing"]
    if len(servers) != 1:
        raise _fail(path, "servers", "needs exactly one server named 'landing'")
    server = servers[0]
    fmt = server.get("format")
    if fmt not in FORMATS:
        raise _fail(path, "servers/landing/format", f"{fmt!r} is not one of {sorted(FORMATS)}")
    encoding = None
    if fmt != "parquet":
        enc = server.get("encoding")
        if enc not in ENCODINGS:
            raise _fail(path, "servers/landing/encoding", f"{enc!r} not one of {list(ENCODINGS)}")
        encoding = ENCODINGS[enc]
    options = _custom(server.get("customProperties"))
    if fmt == "csv" and not options.get("delimiter"):
        raise _fail(path, "servers/landing/customProperties", "a csv extract needs a delimiter")

    if len(doc.get("schema", [])) != 1:
        raise _fail(path, "schema", "needs exactly one schema object (the extract)")
    obj = doc["schema"][0]
    system, _, extract = obj["physicalName"].removeprefix("raw.").partition("__")
    if f"{system}__{extract}" != path.stem or doc.get("domain") != system:
        raise _fail(
            path, "schema/0/physicalName", "must be raw.<system>__<extract>, as the file name"
        )
    columns = tuple(
        _parse_column(path, f"schema/0/properties/{i} ({p.get('name')})", p)
        for i, p in enumerate(obj.get("properties", []))
    )
    names = [c.name for c in columns]
    if len(set(names)) != len(names):
        raise _fail(path, "schema/0/properties", "duplicate column names")
    business_key = tuple(_custom(obj.get("customProperties")).get("businessKey", []))
    unknown = [k for k in business_key if k not in names and not k.startswith("_")]
    if unknown:
        raise _fail(path, "schema/0/customProperties/businessKey", f"unknown columns {unknown}")
    latency = [s for s in doc.get("slaProperties", []) if s.get("property") == "latency"]
    if latency and (latency[0].get("unit") not in ("d", "day", "days") or not latency[0]["value"]):
        raise _fail(path, "slaProperties/latency", "needs a positive value in days (unit: d)")
    availability = [s for s in doc.get("slaProperties", []) if s.get("property") == "availability"]
    due_day = availability[0].get("value") if availability else None
    if availability and (not isinstance(due_day, int) or not 1 <= due_day <= 28):
        raise _fail(path, "slaProperties/availability", "needs a day of the month, 1 to 28")
    return Contract(
        path=path,
        id=doc["id"],
        version=doc["version"],
        system=system,
        extract=extract,
        file_format=fmt,
        encoding=encoding,
        delimiter=options.get("delimiter"),
        quote=options.get("quote"),
        null_values=tuple(options.get("nullValues", [""])),
        landing_glob=server["path"],
        raw_table=obj["physicalName"],
        business_key=business_key,
        business_name=obj.get("businessName"),
        columns=columns,
        purpose=(doc.get("description") or {}).get("purpose"),
        latency_days=int(latency[0]["value"]) if latency else None,
        due_day=due_day,
    )


@functools.cache
def load_contracts(directory: Path = CONTRACT_DIR) -> dict[str, Contract]:
    """All extract contracts, keyed by ``<system>__<extract>``, in a stable order."""
    contracts = [load_contract(p) for p in sorted(directory.glob("*.yaml"))]
    if not contracts:
        raise ContractError(f"{directory}: no contract files found")
    return {c.name: c for c in contracts}

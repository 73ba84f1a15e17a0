"""Write dbt's `raw` source definitions from the data contracts, so dbt never repeats them.

``python -m data_contracts.dbt_sources`` regenerates ``dbt_project/models/staging/_sources.yml``
and ``dbt_project/macros/_business_keys.sql`` (the deduplication keys, which dbt's unit tests
cannot read from source meta); a test fails when a committed file differs from the contracts.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

from data_contracts.contracts import Contract, load_contracts

DBT_DIR = Path(__file__).resolve().parent.parent / "dbt_project"
SOURCES_FILE = DBT_DIR / "models/staging/_sources.yml"
KEYS_FILE = DBT_DIR / "macros/_business_keys.sql"
HEADER = "Generated from the data contracts by `python -m data_contracts.dbt_sources`."
LINEAGE = {
    "_extra": "Columns the contract does not know, as JSON (reported at ingestion).",
    "_source_file": "Landing-zone file the row came from (extract date and re-extract number).",
    "_row_number": "Data row number within that file (header excluded).",
    "_period": "Business month (YYYYMM) the file covers, from its marker.",
    "_loaded_at": "When ingestion loaded the row (UTC).",
}


def _column(c) -> dict:
    text = " — ".join(x for x in (c.business_name, c.description) if x)
    meta = {"physical_type": c.physical_type}
    if c.pii:
        meta["pii"] = c.pii
    return {"name": c.name, "description": text or c.name, "meta": meta}


def _table(contract: Contract) -> dict:
    table: dict = {
        "name": contract.name,
        "description": contract.purpose or contract.business_name or contract.name,
        "meta": {
            "contract": contract.path.name,
            "contract_version": contract.version,
            "business_key": list(contract.business_key),
        },
        # Personal-data columns never reach raw: the vault holds them (derived columns do).
        "columns": [_column(c) for c in contract.columns if c.pii != "vault"]
        + [
            {"name": d.name, "description": f"Derived from {c.name} ({d.rule})."}
            for c in contract.columns
            for d in c.derived
        ]
        + [{"name": k, "description": v} for k, v in LINEAGE.items()],
    }
    if contract.latency_days:
        table["config"] = {
            "freshness": {
                "warn_after": {"count": contract.latency_days, "period": "day"},
                "error_after": {"count": 2 * contract.latency_days, "period": "day"},
            }
        }
    return table


def render_sources() -> str:
    doc = {
        "version": 2,
        "sources": [
            {
                "name": "raw",
                "schema": "raw",
                "description": "Source extracts as ingestion loaded them; generated from "
                "data_contracts/extracts by `python -m data_contracts.dbt_sources`.",
                "loaded_at_field": "_loaded_at",
                "tables": [_table(c) for c in load_contracts().values()],
            }
        ],
    }
    return f"# {HEADER}\n" + yaml.safe_dump(doc, allow_unicode=True, sort_keys=False, width=100)


def render_business_keys() -> str:
    keys = {c.name: list(c.business_key) for c in load_contracts().values()}
    return (
        f"{{#- {HEADER} -#}}\n"
        "{% macro business_key(table_name) -%}\n"
        f"    {{{{ return({json.dumps(keys)}[table_name]) }}}}\n"
        "{%- endmacro %}\n"
    )


def generated_files() -> dict[Path, str]:
    return {SOURCES_FILE: render_sources(), KEYS_FILE: render_business_keys()}


def main() -> int:
    for path, text in generated_files().items():
        path.write_text(text, "utf-8")
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

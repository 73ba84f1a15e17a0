import json
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
import yaml

from data_contracts import CONTRACT_DIR, ContractError, load_contract, load_contracts

# The extracts of shared/source-extracts.md, system by system.
EXPECTED = {
    "mkt__cons_archive",
    "mkt__monthly_bill",
    "ami__daily_reading",
    "ami__meter_change",
    "ami__load_curve",
    "crm__work_order",
    "fin__payment",
    "fin__arrears",
    "om__outage",
    "ext__weather_daily",
    "ext__economy_monthly",
}


def test_one_contract_per_extract_of_the_interface():
    assert set(load_contracts()) == EXPECTED


@pytest.mark.parametrize("path", sorted(CONTRACT_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_contract_follows_the_official_odcs_schema(path: Path):
    schema = json.loads(
        resources.files("open_data_contract_standard").joinpath("schema.json").read_text("utf-8")
    )
    errors = list(
        jsonschema.Draft201909Validator(schema).iter_errors(yaml.safe_load(path.read_text()))
    )
    assert errors == []


def test_formats_and_encodings_follow_the_interface():
    c = load_contracts()
    assert (c["mkt__cons_archive"].encoding, c["mkt__cons_archive"].delimiter) == ("gbk", ",")
    assert (c["fin__payment"].encoding, c["fin__payment"].delimiter) == ("utf-8-sig", "|")
    assert c["crm__work_order"].file_format == "jsonl"
    assert c["ami__daily_reading"].file_format == "parquet"
    assert [f"P{i}" for i in range(1, 97)] == list(c["ami__load_curve"].column_names[3:])
    assert {x.name for x in c["mkt__cons_archive"].pii_columns} == {
        "CONS_NAME",
        "ADDR",
        "MOBILE",
        "CERT_NO",
    }
    assert set(c["mkt__cons_archive"].null_values) == {"", "NULL", "\\N"}


def _broken(tmp_path: Path, edit) -> Path:
    doc = yaml.safe_load((CONTRACT_DIR / "om__outage.yaml").read_text())
    edit(doc)
    path = tmp_path / "om__outage.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    return path


def test_a_column_type_we_cannot_check_is_refused_with_file_and_field(tmp_path):
    path = _broken(tmp_path, lambda d: d["schema"][0]["properties"][0].update(physicalType="BLOB"))
    with pytest.raises(
        ContractError,
        match=r"om__outage.yaml: schema/0/properties/0 \(OUTAGE_ID\)"
        r".physicalType: unsupported physical type 'BLOB'",
    ):
        load_contract(path)


def test_a_contract_breaking_the_odcs_schema_is_refused(tmp_path):
    path = _broken(tmp_path, lambda d: d["schema"][0]["properties"][4].update(logicalType="text"))
    with pytest.raises(ContractError, match="schema/0/properties/4/logicalType: does not follow"):
        load_contract(path)


def test_a_bad_pattern_is_refused(tmp_path):
    path = _broken(
        tmp_path,
        lambda d: d["schema"][0]["properties"][0].update(logicalTypeOptions={"pattern": "([0-9]"}),
    )
    with pytest.raises(ContractError, match=r"logicalTypeOptions\.pattern"):
        load_contract(path)


def test_the_generated_dbt_files_follow_the_contracts():
    from data_contracts.dbt_sources import generated_files

    for path, text in generated_files().items():
        assert path.read_text("utf-8") == text, (
            f"{path} is stale: run `python -m data_contracts.dbt_sources`"
        )

"""Every code table of the source interface, read from the data contracts (their `enum`s).

The contracts are the one place code values and labels are written; ingestion validates
against them and this model makes them joinable, so decoding never repeats the lists.
"""

import re

import polars as pl

_CJK = re.compile(r"^([\u3000-\u9fff\uff00-\uffef]+)\s*(.*)$")


def _split(label):
    """'居民生活 residential' → ('居民生活', 'residential'); 'hotline' → (None, 'hotline')."""
    if label is None:
        return None, None
    match = _CJK.match(label)
    return (match.group(1), match.group(2) or None) if match else (None, label)


def model(dbt, session):
    dbt.config(materialized="table")
    from data_contracts import load_contracts

    rows = []
    for key, contract in load_contracts().items():
        for column in contract.columns:
            labels = dict(column.enum_labels)
            for value in column.enum:
                zh, en = _split(labels.get(value))
                rows.append(
                    {
                        "extract": key,
                        "column_name": column.name.lower(),
                        "code": value,
                        "label_zh": zh,
                        "label_en": en or value,
                    }
                )
    return pl.DataFrame(
        rows,
        schema={
            "extract": pl.String,
            "column_name": pl.String,
            "code": pl.String,
            "label_zh": pl.String,
            "label_en": pl.String,
        },
    )

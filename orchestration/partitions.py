"""Business months: the partitions every asset shares, and the months the landing zone holds.

A month enters the platform when a marked file whose marker names it (``period``) lands, so the
partitions are dynamic ("2025-10", …): the landing sensor adds them, and a backfill of a drop
adds every month its markers name. Ingestion loads a month's files; dbt rebuilds the warehouse
(every model whole, in one run however many months are asked for); the models and publishing
work on the month as their as-of month.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import dagster as dg

from data_contracts import Contract
from orchestration.ingest import landing as lz

MONTHS = dg.DynamicPartitionsDefinition(name="month")


def month_key(period: str) -> str:
    """'202510' (a marker's period) → '2025-10' (a partition key)."""
    return f"{period[:4]}-{period[4:6]}"


def key_period(key: str) -> str:
    return key.replace("-", "")


def key_month(key: str) -> date:
    """'2025-10' → date(2025, 10, 1), the as-of month of the models and publishing."""
    year, month = key.split("-")
    return date(int(year), int(month), 1)


@dataclass(frozen=True)
class MarkedFile:
    extract: str  # contract name, e.g. fin__payment
    relative: str  # path below the landing root
    period: str | None  # YYYYMM from the marker; None when the marker cannot be read


def marked_files(landing: Path, contracts: Iterable[Contract]) -> list[MarkedFile]:
    """Every marked data file in the landing zone (unmarked files are still being written)."""
    found = []
    for contract in contracts:
        for file in lz.list_files(landing, contract):
            if file.is_marked:
                found.append(MarkedFile(contract.name, file.relative, lz.marker_period(file)))
    return found


def landing_months(landing: Path, contracts: Iterable[Contract]) -> list[str]:
    """Partition keys of every month a marker in the landing zone names, oldest first."""
    return sorted({month_key(f.period) for f in marked_files(landing, contracts) if f.period})

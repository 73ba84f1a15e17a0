"""ODCS data contracts of the source extracts and the loader that ingestion and tests share."""

from data_contracts.contracts import (
    CONTRACT_DIR,
    Column,
    Contract,
    ContractError,
    DerivedColumn,
    load_contract,
    load_contracts,
)

__all__ = [
    "CONTRACT_DIR",
    "Column",
    "Contract",
    "ContractError",
    "DerivedColumn",
    "load_contract",
    "load_contracts",
]

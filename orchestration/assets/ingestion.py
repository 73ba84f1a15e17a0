"""One ingestion asset per source extract, built from its data contract, with its checks."""

import dagster as dg

from data_contracts import Contract, load_contracts
from orchestration.ingest.loader import ensure_ops, ensure_raw_table, ingest_extract
from orchestration.ingest.pii import attach_vault
from orchestration.ingest.reconcile import ledger_problems, unaccounted_files
from orchestration.resources import FinegridResource


def _listing(items: list[str], limit: int | None = 50) -> dg.MetadataValue:
    """A markdown list for the UI (the first ``limit`` items; all with None), or "none"."""
    return dg.MetadataValue.md("\n".join(f"- {i}" for i in items[:limit]) or "none")


def raw_key(contract: Contract) -> dg.AssetKey:
    return dg.AssetKey(["raw", contract.name])


def _description(contract: Contract) -> str:
    cols = "\n".join(
        f"- `{c.name}` {c.physical_type}{' (required)' if c.required else ''}"
        f"{' — personal data: ' + c.pii if c.pii else ''} {c.business_name or ''}"
        for c in contract.columns
    )
    return (
        f"{contract.business_name or contract.extract}: `{contract.landing_glob}` "
        f"({contract.file_format}) loaded into `{contract.raw_table}`.\n\n"
        f"Contract `{contract.path.name}` v{contract.version}.\n\n{cols}"
    )


def build_ingestion_asset(contract: Contract) -> dg.AssetsDefinition:
    @dg.asset(
        key=raw_key(contract),
        group_name=f"raw_{contract.system}",
        kinds={"duckdb", contract.file_format},
        description=_description(contract),
        metadata={
            "contract": contract.path.name,
            "contract_version": contract.version,
            "landing": contract.landing_glob,
            "table": contract.raw_table,
        },
        tags={"system": contract.system},
    )
    def _ingest(
        context: dg.AssetExecutionContext, finegrid: FinegridResource
    ) -> dg.MaterializeResult:
        settings = finegrid.settings()
        with finegrid.connect() as con:
            if contract.pii_columns:
                attach_vault(con, settings.pii_vault_path, settings.require_pii_key())
            outcome = ingest_extract(con, settings.landing_dir, contract, log=context.log.info)
            total = con.execute(f"SELECT count(*) FROM {contract.raw_table}").fetchone()[0]
        rejected = [f"{f.source_file}: {f.reason}" for f in outcome.files if f.status == "rejected"]
        extra = sorted({c for f in outcome.files for c in f.extra_columns})
        for r in rejected:
            context.log.warning(f"rejected {r}")
        return dg.MaterializeResult(
            metadata={
                "files_loaded": outcome.count("loaded"),
                "files_duplicate": outcome.count("duplicate"),
                "files_rejected": outcome.count("rejected"),
                "files_pending": outcome.count("pending"),
                "rows_loaded": outcome.rows_loaded,
                "rows_quarantined": outcome.rows_quarantined,
                "table_rows": total,
                "extra_columns": ", ".join(extra) or "none",
                "rejected": _listing(rejected, limit=None),
            }
        )

    return _ingest


def build_ingestion_checks(contract: Contract) -> list[dg.AssetChecksDefinition]:
    key = raw_key(contract)

    @dg.asset_check(
        asset=key,
        name="ledger_reconciles",
        description="For every loaded file: marker rows = rows loaded + rows "
        "quarantined, and raw/quarantine hold exactly those rows.",
    )
    def _reconciles(finegrid: FinegridResource) -> dg.AssetCheckResult:
        with finegrid.connect() as con:
            ensure_ops(con)
            ensure_raw_table(con, contract)
            problems = ledger_problems(con, contract)
        return dg.AssetCheckResult(
            passed=not problems,
            metadata={
                "problems": len(problems),
                "details": _listing(problems),
            },
        )

    @dg.asset_check(
        asset=key,
        name="no_marked_file_unaccounted",
        description="Every marked file of the extract is in the ledger as loaded, "
        "duplicate or rejected.",
    )
    def _accounted(finegrid: FinegridResource) -> dg.AssetCheckResult:
        settings = finegrid.settings()
        with finegrid.connect() as con:
            ensure_ops(con)
            missing = unaccounted_files(con, settings.landing_dir, contract)
        return dg.AssetCheckResult(
            passed=not missing,
            metadata={
                "unaccounted": len(missing),
                "files": _listing(missing),
            },
        )

    return [_reconciles, _accounted]


def ingestion_definitions() -> tuple[list[dg.AssetsDefinition], list[dg.AssetChecksDefinition]]:
    contracts = load_contracts().values()
    assets = [build_ingestion_asset(c) for c in contracts]
    checks = [chk for c in contracts for chk in build_ingestion_checks(c)]
    return assets, checks

"""One ingestion asset per source extract, built from its data contract, with its checks."""

from collections.abc import Sequence

import dagster as dg

from data_contracts import Contract, load_contracts
from orchestration.assets.policies import ONE_RUN, RETRY, WRITER_POOL, pii_key
from orchestration.ingest.loader import ensure_ops, ingest_extract
from orchestration.ingest.pii import attach_vault
from orchestration.ingest.reconcile import ledger_problems, ledger_summary, unaccounted_files
from orchestration.partitions import MONTHS, key_period
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


LEDGER_CHECKS = {
    "ledger_reconciles": "For every loaded file: marker rows = rows loaded + rows quarantined, "
    "and raw/quarantine hold exactly those rows.",
    "no_marked_file_unaccounted": "Every marked file of the months ingested is in the ledger "
    "as loaded, duplicate or rejected.",
}


def ledger_check_keys(contract: Contract) -> list[dg.AssetCheckKey]:
    return [dg.AssetCheckKey(raw_key(contract), name) for name in LEDGER_CHECKS]


def build_ingestion_asset(contract: Contract) -> dg.AssetsDefinition:
    key = raw_key(contract)

    # The ledger checks run in the ingestion step itself, on its connection: one process and
    # one pool slot per extract rather than three.
    @dg.asset(
        key=key,
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
        partitions_def=MONTHS,
        backfill_policy=ONE_RUN,
        pool=WRITER_POOL,
        retry_policy=RETRY,
        check_specs=[
            dg.AssetCheckSpec(name, asset=key, description=text)
            for name, text in LEDGER_CHECKS.items()
        ],
    )
    def _ingest(context: dg.AssetExecutionContext, finegrid: FinegridResource):
        settings = finegrid.settings()
        periods = {key_period(k) for k in context.partition_keys}
        with finegrid.connect() as con:
            if contract.pii_columns:
                attach_vault(con, settings.pii_vault_path, pii_key(settings))
            outcome = ingest_extract(
                con, settings.landing_dir, contract, log=context.log.info, periods=periods
            )
            total = con.execute(f"SELECT count(*) FROM {contract.raw_table}").fetchone()[0]
            problems = ledger_problems(con, contract)
            missing = unaccounted_files(con, settings.landing_dir, contract)
        rejected = [f"{f.source_file}: {f.reason}" for f in outcome.files if f.status == "rejected"]
        extra = sorted({c for f in outcome.files for c in f.extra_columns})
        for r in rejected:
            context.log.warning(f"rejected {r}")
        yield dg.MaterializeResult(
            metadata={
                "months": ", ".join(sorted(context.partition_keys)),
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
        yield dg.AssetCheckResult(
            check_name="ledger_reconciles",
            passed=not problems,
            metadata={"problems": len(problems), "details": _listing(problems)},
        )
        yield dg.AssetCheckResult(
            check_name="no_marked_file_unaccounted",
            passed=not missing,
            metadata={"unaccounted": len(missing), "files": _listing(missing)},
        )

    return _ingest


LEDGER_KEY = dg.AssetKey(["ops", "load_ledger"])


def build_ledger_asset(contracts: Sequence[Contract]) -> dg.AssetsDefinition:
    """Each month as ingested, across extracts: what the warehouse and the month's models are
    built from.

    It shapes a backfill of everything from the UI. The dbt seeds, models without refs and
    every model reading a raw table depend on it, and it on every ingestion asset, in their
    run: the unpartitioned warehouse becomes ready at one tick, once the whole ingestion is
    done, and builds in one run. Without it, the backfill daemon launched a dbt run for the
    seeds at once and others as raw tables finished, and dbt's tests between models of
    different runs failed on tables not built yet. The models' first assets depend on the
    month's ledger too: a backfill by month reaches them only through partitioned assets."""

    @dg.asset(
        key=LEDGER_KEY,
        deps=[raw_key(c) for c in contracts],
        group_name="raw_ledger",
        kinds={"duckdb"},
        description="`ops.load_ledger` for the month, across extracts: every landed file's fate "
        "(loaded, duplicate, rejected, pending), rows loaded and quarantined, and the extracts "
        "with no loaded file. The warehouse builds after it, in one run.",
        partitions_def=MONTHS,
        backfill_policy=ONE_RUN,
        pool=WRITER_POOL,
        retry_policy=RETRY,
    )
    def _ledger(context: dg.AssetExecutionContext, finegrid: FinegridResource):
        periods = [key_period(k) for k in context.partition_keys]
        with finegrid.connect() as con:
            ensure_ops(con)  # materialised on its own before any ingestion: an empty ledger
            summary = ledger_summary(con, contracts, periods)
        missing = [f"{m}: {', '.join(names)}" for m, names in summary["missing"].items()]
        for line in missing:
            context.log.warning(f"no loaded file for {line}")
        return dg.MaterializeResult(
            metadata={
                "months": ", ".join(sorted(context.partition_keys)),
                **{f"files_{status}": n for status, n in summary["files"].items()},
                "rows_loaded": summary["rows_loaded"],
                "rows_quarantined": summary["rows_quarantined"],
                "missing_extracts": _listing(missing, limit=None),
            }
        )

    return _ledger


def ingestion_assets() -> list[dg.AssetsDefinition]:
    return [build_ingestion_asset(c) for c in load_contracts().values()]

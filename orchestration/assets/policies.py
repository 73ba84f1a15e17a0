"""How assets run: the writers' concurrency pool, retries, and the month partitions' backfills.

DuckDB lets one process write a file at a time. Every step that writes the warehouse (or its
vault) claims a slot of the pool ``duckdb_writer``, whose limit is 1 in the instance settings
(``dagster_home/dagster.yaml``), so runs and steps queue rather than fail with a lock error;
readers use the analyst snapshot. Every writer is idempotent (the ledger, replace-by-month,
whole rebuilds), so a failed step can simply run again.
"""

import dagster as dg

from orchestration.settings import ConfigError, Settings

WRITER_POOL = "duckdb_writer"

# A transient failure (a file still being copied, a lock held by a process outside Dagster)
# gets two more tries, 15 s then 30 s later (± jitter).
RETRY = dg.RetryPolicy(
    max_retries=2, delay=15, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)

# Ingestion takes any number of months in one run (the warehouse is unpartitioned: every dbt build
# takes every month); the models, the publish marts and publishing run month by month, each
# month its own as-of month.
ONE_RUN = dg.BackfillPolicy.single_run()
RUN_PER_MONTH = dg.BackfillPolicy.multi_run(max_partitions_per_run=1)


def pii_key(settings: Settings) -> str:
    """The vault key; a missing one fails the step at once (retrying cannot set it)."""
    try:
        return settings.require_pii_key()
    except ConfigError as exc:
        raise dg.Failure(str(exc), allow_retries=False) from exc

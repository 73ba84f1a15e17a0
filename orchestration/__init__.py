"""finegrid's Dagster code location and the commands around it."""

import warnings

# Every month-partitioned asset sets `backfill_policy` (ingestion takes many months in one run,
# the models one month per run: orchestration/assets/policies.py). Dagster 1.13 calls the
# parameter beta and warns once per asset: sixteen warnings atop every run's log and every load
# of the code location. The choice is deliberate, so that warning alone is silenced, by its
# message; any other still shows. (By message alone: importing Dagster here for its warning
# class would slow every `finegrid-dbt` command, which imports this package.)
warnings.filterwarnings("ignore", message="Parameter `backfill_policy`")

-- Reconciliation: billed kWh (mkt) against metered kWh (ami) per customer-month. A month
-- counts when it was fully measured without a gap crossing into it; it fails when the two
-- differ by more than var('reconcile_tolerance') of the bill. The test errors (a row comes
-- back) when more than var('reconcile_max_failure_rate') of the months fail.
{{ config(severity='error', meta={'dagster': {'ref': {'name': 'fct_monthly_bills'}}}) }}

-- The metered side is the monthly usage, which adds up the days of known customers already
-- (summing the 71 M days of 100,000 accounts again took 43 s).
with metered as (
    select
        customer_id,
        usage_month as energy_month,
        kwh as metered_kwh,
        days_measured as days,
        days_estimated > 0 or days_negative_step > 0 as is_uncertain
    from {{ ref('int_customer_month_usage') }}
),

bills as (
    select customer_id, bill_month, billed_kwh
    from {{ ref('fct_monthly_bills') }}
    where is_known_customer
),

compared as (
    select
        bills.customer_id,
        bills.bill_month,
        bills.billed_kwh,
        metered.metered_kwh,
        abs(bills.billed_kwh - metered.metered_kwh)
            > {{ var('reconcile_tolerance') }} * greatest(bills.billed_kwh, 1) as is_mismatch
    from bills
    join metered
        on metered.customer_id = bills.customer_id
        and metered.energy_month = bills.bill_month
    where not metered.is_uncertain
      and metered.days = day(last_day(bills.bill_month))
),

summary as (
    select
        count(*) as months_compared,
        count(*) filter (where is_mismatch) as months_mismatched
    from compared
)

select
    months_compared,
    months_mismatched,
    months_mismatched / months_compared as failure_rate
from summary
where months_compared > 0
  and months_mismatched > {{ var('reconcile_max_failure_rate') }} * months_compared

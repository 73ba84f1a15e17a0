-- Reconciliation: billed kWh (mkt) against metered kWh (ami) per customer-month. A month
-- counts when it was fully measured without a gap crossing into it; it fails when the two
-- differ by more than var('reconcile_tolerance') of the bill. The test errors (a row comes
-- back) when more than var('reconcile_max_failure_rate') of the months fail.
{{ config(severity='error', meta={'dagster': {'ref': {'name': 'fct_monthly_bills'}}}) }}

with metered as (
    select
        customer_id,
        energy_month,
        sum(kwh) as metered_kwh,
        count(kwh) as days,
        bool_or(is_estimated or has_negative_step) as is_uncertain
    from {{ ref('fct_daily_energy') }}
    where is_known_customer
    group by customer_id, energy_month
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

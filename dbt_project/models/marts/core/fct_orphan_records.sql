-- Records of accounts that no archive snapshot knows (or that carry no usable account number),
-- kept and counted per source so they can be chased, never joined to a customer.
-- The facts already mark each record's account as known or not: reading them, rather than
-- the staging views they were built from, spares deduplicating every extract a second time
-- (100,000 accounts: the model took 11-12 s of each build).
with known as (
    select customer_id from {{ ref('dim_customer') }}
),

records as (
    -- The readings as int_meter_readings holds them (already de-duplicated: the staging view
    -- would repeat that over every reading), without the values meter changes add.
    select 'ami.daily_reading' as source, customer_id, reading_date as record_date
    from {{ ref('int_meter_readings') }}
    where not is_from_meter_change
        and (customer_id is null or customer_id not in (select customer_id from known))
    union all
    select 'ami.load_curve', customer_id, reading_date from {{ ref('stg_ami__load_curves') }}
    where customer_id is null or customer_id not in (select customer_id from known)
    union all
    select 'mkt.monthly_bill', customer_id, bill_month from {{ ref('fct_monthly_bills') }}
    where not is_known_customer
    union all
    select 'fin.payment', customer_id, paid_date from {{ ref('fct_payments') }}
    where not is_known_customer
    union all
    select 'fin.arrears', customer_id, snapshot_date from {{ ref('fct_arrears') }}
    where not is_known_customer
    union all
    select 'crm.work_order', customer_id, accepted_at::date from {{ ref('fct_work_orders') }}
    where not is_known_customer
),

final as (
    select
        source,
        customer_id,
        customer_id is null as is_unidentified,
        count(*) as records,
        min(record_date) as first_record_date,
        max(record_date) as last_record_date
    from records
    group by source, customer_id
)

select * from final

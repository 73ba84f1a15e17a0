-- Per customer and month: payments by channel, work orders by type, satisfaction, outages and
-- arrears — what behaviour, demand and credit features add up over 3, 6 and 12 months.
with payments as (
    select
        customer_id,
        paid_month as activity_month,
        count(*) filter (where not is_reversal and not is_cancelled) as payments,
        {%- for mode, name in var('pay_channels').items() %}
        count(*) filter (where not is_reversal and not is_cancelled and pay_mode = '{{ mode }}') as payments_{{ name }},
        {%- endfor %}
        count(*) filter (where not is_reversal and not is_cancelled and is_online) as payments_online,
        sum(net_amount_yuan) as paid_yuan,
        sum(net_amount_yuan) filter (where is_prepayment) as prepaid_yuan,
        count(*) filter (where is_reversal) as reversals
    from {{ ref('fct_payments') }}
    where is_known_customer
    group by all
),

orders as (
    select
        customer_id,
        accepted_month as activity_month,
        count(*) as work_orders,
        {%- for type, name in var('work_order_kinds').items() %}
        count(*) filter (where order_type = '{{ type }}') as {{ name }},
        {%- endfor %}
        count(satisfaction_score) as rated_orders,
        sum(satisfaction_score) as satisfaction_points,
        count(*) filter (where satisfaction_score <= 1) as dissatisfied
    from {{ ref('fct_work_orders') }}
    where is_known_customer
    group by all
),

outages as (
    select
        customer_id,
        started_month as activity_month,
        count(*) as outages,
        sum(outage_minutes) as outage_minutes
    from {{ ref('fct_customer_outages') }}
    group by all
),

arrears as (
    select
        customer_id,
        snapshot_month as activity_month,
        sum(owed_yuan) as arrears_yuan,
        sum(late_fee_yuan) as late_fee_yuan,
        max(days_overdue) as max_days_overdue
    from {{ ref('fct_arrears') }}
    where is_known_customer
    group by all
),

bills as (
    select
        customer_id,
        bill_month as activity_month,
        amount_yuan as bill_yuan,
        tariff_code,
        is_tou_billed
    from {{ ref('fct_monthly_bills') }}
    where is_known_customer
),

keys as (
    select customer_id, activity_month from payments
    union select customer_id, activity_month from orders
    union select customer_id, activity_month from outages
    union select customer_id, activity_month from arrears
    union select customer_id, activity_month from bills
)

select *
from keys
left join payments using (customer_id, activity_month)
left join orders using (customer_id, activity_month)
left join outages using (customer_id, activity_month)
left join arrears using (customer_id, activity_month)
left join bills using (customer_id, activity_month)

-- Per customer and as-of month: how the bills that fell due in the last 12 months were paid,
-- as far as was known at the end of the as-of month (no look-ahead: a payment after the
-- month's end counts as not yet made).
with spine as (
    select customer_id, as_of_month, month_index from {{ ref('int_customer_months') }}
),

bills as (
    select
        customer_id,
        year(bill_month) * 12 + month(bill_month) as bill_index,
        due_date,
        first_paid_at::date as paid_date
    from {{ ref('fct_monthly_bills') }}
    where is_known_customer and due_date is not null
),

due as (
    select
        spine.customer_id,
        spine.as_of_month,
        spine.month_index - bills.bill_index as months_ago,
        bills.due_date,
        bills.paid_date <= last_day(spine.as_of_month) as is_paid_as_of,
        date_diff(
            'day',
            bills.due_date,
            case when bills.paid_date <= last_day(spine.as_of_month) then bills.paid_date
                 else last_day(spine.as_of_month) end
        ) as days_after_due
    from spine
    join bills
        on bills.customer_id = spine.customer_id
        and bills.bill_index between spine.month_index - 11 and spine.month_index
    where bills.due_date <= last_day(spine.as_of_month)
)

select
    customer_id,
    as_of_month,
    count(*) as bills_due_12m,
    count(*) filter (where days_after_due > 0 and months_ago < 3) as late_bills_3m,
    count(*) filter (where days_after_due > 0 and months_ago < 6) as late_bills_6m,
    count(*) filter (where days_after_due > 0) as late_bills_12m,
    coalesce(max(greatest(days_after_due, 0)), 0) as max_days_late_12m,
    avg(days_after_due) filter (where coalesce(is_paid_as_of, false)) as avg_days_paid_after_due_12m,
    count(*) filter (where not coalesce(is_paid_as_of, false)) as unpaid_due_bills
from due
group by customer_id, as_of_month

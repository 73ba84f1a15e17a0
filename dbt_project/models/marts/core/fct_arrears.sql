-- Month-end arrears per customer and unpaid bill, with how long the bill has been overdue.
with arrears as (
    select * from {{ ref('stg_fin__arrears') }}
),

bills as (
    select customer_id, bill_month, due_date from {{ ref('stg_mkt__bills') }}
),

customers as (
    select customer_id from {{ ref('dim_customer') }}
),

final as (
    select
        arrears.customer_id,
        arrears.bill_month,
        arrears.snapshot_date,
        arrears.snapshot_month,
        arrears.owed_yuan,
        arrears.late_fee_yuan,
        bills.due_date,
        date_diff('day', bills.due_date, arrears.snapshot_date) as days_overdue,
        customers.customer_id is not null as is_known_customer
    from arrears
    left join bills using (customer_id, bill_month)
    left join customers using (customer_id)
)

select * from final

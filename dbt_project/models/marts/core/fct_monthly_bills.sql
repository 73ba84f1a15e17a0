-- One bill per customer and billing month (corrections applied), with its settlement: when it
-- was first paid and how much was paid against it (reversed payments excluded).
with bills as (
    select * from {{ ref('stg_mkt__bills') }}
),

payments as (
    select
        customer_id,
        bill_month,
        min(paid_at) as first_paid_at,
        sum(net_amount_yuan) as paid_yuan
    from {{ ref('stg_fin__payments') }}
    where not is_reversal and not is_cancelled and bill_month is not null
    group by customer_id, bill_month
),

customers as (
    select customer_id from {{ ref('dim_customer') }}
),

final as (
    select
        bills.customer_id,
        bills.bill_month,
        bills.billed_kwh,
        bills.tip_kwh,
        bills.peak_kwh,
        bills.flat_kwh,
        bills.valley_kwh,
        bills.amount_yuan,
        bills.tariff_code,
        bills.is_tou_billed,
        bills.is_correction as is_corrected,
        bills.has_tou_mismatch,
        bills.issued_date,
        bills.due_date,
        payments.first_paid_at,
        coalesce(payments.paid_yuan, 0)::decimal(14, 2) as paid_yuan,
        date_diff('day', bills.due_date, payments.first_paid_at::date) as days_paid_after_due,
        customers.customer_id is not null as is_known_customer
    from bills
    left join payments using (customer_id, bill_month)
    left join customers using (customer_id)
)

select * from final

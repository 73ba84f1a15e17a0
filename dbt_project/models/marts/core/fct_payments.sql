-- Every payment and reversal, in yuan; `net_amount_yuan` is what counts (a reversed payment
-- and its reversal net to zero).
with payments as (
    select * from {{ ref('stg_fin__payments') }}
),

customers as (
    select customer_id from {{ ref('dim_customer') }}
),

final as (
    select
        payments.payment_id,
        payments.customer_id,
        payments.paid_at,
        payments.paid_at::date as paid_date,
        date_trunc('month', payments.paid_at)::date as paid_month,
        payments.amount_yuan,
        payments.net_amount_yuan,
        payments.pay_mode,
        payments.pay_channel,
        payments.is_online,
        payments.bill_month,
        payments.is_prepayment,
        payments.is_reversal,
        payments.reversed_payment_id,
        payments.is_cancelled,
        payments.reversal_payment_id,
        payments.is_unmatched_reversal,
        customers.customer_id is not null as is_known_customer
    from payments
    left join customers using (customer_id)
)

select * from final

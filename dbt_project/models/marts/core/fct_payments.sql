-- Every payment and reversal, in yuan; `net_amount_yuan` is what counts (a reversed payment
-- and its reversal net to zero).
--
-- Incremental per payment: a build rewrites the payments stg_fin__payments wrote since this
-- table last read it (`staged_at`, its stamp), and those whose customer became known or
-- unknown or whose channel's label changed since. A table built before `staged_at` existed
-- is rewritten whole once, and gains the column.
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key='payment_id',
    on_schema_change='append_new_columns',
) }}
{%- set staged = ref('stg_fin__payments') %}
{%- set channel = code_label('fin__payment', 'pay_mode', 'pay_mode') %}
{%- set partial = false %}
{%- if is_incremental() %}
    {%- set partial = 'staged_at' in (adapter.get_columns_in_relation(this) | map(attribute='name') | list) %}
{%- endif %}
with customers as (
    select customer_id from {{ ref('dim_customer') }}
),
{%- if partial %}

-- The kept rows whose customer's standing or channel label is no longer what they say.
outdated as (
    select kept.payment_id
    from {{ this }} as kept
    left join customers using (customer_id)
    left join {{ code_table('fin__payment', 'pay_mode') }} as channel on channel.code = kept.pay_mode
    where kept.is_known_customer <> (customers.customer_id is not null)
        or kept.pay_channel is distinct from channel.label
),
{%- endif %}

payments as (
    select * from {{ staged }}
    {%- if partial %}
    where built_at > {{ own_watermark('staged_at') }}
        or payment_id in (select payment_id from outdated)
    {%- endif %}
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
        {{ channel }} as pay_channel,
        payments.is_online,
        payments.bill_month,
        payments.is_prepayment,
        payments.is_reversal,
        payments.reversed_payment_id,
        payments.is_cancelled,
        payments.reversal_payment_id,
        payments.is_unmatched_reversal,
        customers.customer_id is not null as is_known_customer,
        payments.built_at as staged_at
    from payments
    left join customers using (customer_id)
)

select * from final

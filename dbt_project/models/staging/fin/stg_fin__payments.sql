-- Every payment once (on PAY_SN, the latest extract wins), in yuan, with reversals matched to
-- the payment they cancel: a cancelled payment and its reversal net to nothing.
--
-- Incremental per payment: a build recomputes the payments that rows loaded since the last
-- one can change, each from all its extracts, and leaves the others as they were. Those are
-- the payments with new rows; the payments those rows reverse, and those the rows' previous
-- versions reversed (a reversal re-extracted against another payment, or no longer a
-- reversal); and the reversals of a payment with new rows, whose reversed payment may have
-- appeared only now. A payment's row reads the reversals of it, so their extracts are read
-- too. Codes only: a label here would go stale where payments are not rebuilt when the
-- contract's code table changes, so fct_payments labels the channel. At 100,000 accounts a
-- new month rebuilt whole took 5.6 s of the increment's build (2.0 s to compute, the rest
-- writing 2.2 M rows).
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key='payment_id',
    on_schema_change='sync_all_columns',
) }}
{%- set raw = source('raw', 'fin__payment') %}
{%- set only = none %}
{%- if is_incremental() %}
{%- set since = own_watermark('loaded_at') %}

with arrived as (
    select PAY_SN as payment_id, nullif(trim(ORIG_PAY_SN), '') as reversed_payment_id
    from {{ raw }}
    where _loaded_at > {{ since }}
),

affected as (
    select payment_id from arrived
    union
    select reversed_payment_id from arrived where reversed_payment_id is not null
    union
    select kept.reversed_payment_id from {{ this }} as kept
    where kept.reversed_payment_id is not null
        and kept.payment_id in (select payment_id from arrived)
    union
    select kept.payment_id from {{ this }} as kept
    where kept.reversed_payment_id in (select payment_id from arrived)
),

-- The affected payments and every payment any extract of which names one as its original.
read_keys as (
    select payment_id from affected
    union
    select PAY_SN from {{ raw }}
    where nullif(trim(ORIG_PAY_SN), '') in (select payment_id from affected)
),
{%- set only = 'PAY_SN in (select payment_id from read_keys)' %}
{%- else %}

with
{%- endif %}

source as (
    {{ latest_per_key('fin__payment', where=only) }}
),

typed as (
    select
        PAY_SN as payment_id,
        {{ normalise_cons_no('CONS_NO') }} as customer_id,
        try_strptime(PAY_TIME, ['%Y/%m/%d %H:%M:%S', '%Y%m%d%H%M%S']) as paid_at,
        cast(cast(PAY_AMT as decimal(18, 2)) * 0.01 as decimal(14, 2)) as amount_yuan,
        PAY_MODE as pay_mode,
        PAY_MODE in ('03', '04', '05') as is_online,
        case when nullif(trim(BILL_YM), '') is not null then {{ month_start('BILL_YM') }} end as bill_month,
        nullif(trim(BILL_YM), '') is null as is_prepayment,
        REV_FLAG = '1' as is_reversal,
        nullif(trim(ORIG_PAY_SN), '') as reversed_payment_id,
        _source_file as source_file,
        _loaded_at as loaded_at
    from source
),

reversals as (
    select
        reversed_payment_id,
        payment_id as reversal_payment_id,
        paid_at as reversed_at
    from typed
    where is_reversal
    qualify row_number() over (partition by reversed_payment_id order by paid_at, payment_id) = 1
),

final as (
    select
        typed.*,
        reversals.reversal_payment_id,
        reversals.reversed_at,
        reversals.reversal_payment_id is not null and not typed.is_reversal as is_cancelled,
        -- Every PAY_SN extracted is a payment here (one row per key), also those an
        -- incremental build does not read.
        typed.is_reversal
            and typed.reversed_payment_id not in (select PAY_SN from {{ raw }}) as is_unmatched_reversal,
        case
            when typed.is_reversal or reversals.reversal_payment_id is not null then 0
            else typed.amount_yuan
        end as net_amount_yuan,
        -- The build's stamp: fct_payments rewrites the rows stamped after its last build.
        {{ build_stamp() }} as built_at
    from typed
    -- One equality, so DuckDB hashes the join: `payment_id = reversed_payment_id and not
    -- is_reversal` made it a nested loop, quadratic in the payments (60 s at 100k accounts).
    left join reversals
        on reversals.reversed_payment_id = case when not typed.is_reversal then typed.payment_id end
    {%- if is_incremental() %}
    where typed.payment_id in (select payment_id from affected)
    {%- endif %}
)

select * from final

-- Month-end arrears per account and bill.
with source as (
    {{ latest_per_key('fin__arrears') }}
),

final as (
    select
        {{ normalise_cons_no('CONS_NO') }} as customer_id,
        {{ month_start('BILL_YM') }} as bill_month,
        cast(OWE_AMT as decimal(14, 2)) as owed_yuan,
        cast(coalesce(PENALTY_AMT, 0) as decimal(14, 2)) as late_fee_yuan,
        SNAP_DATE as snapshot_date,
        date_trunc('month', SNAP_DATE)::date as snapshot_month,
        _source_file as source_file,
        _loaded_at as loaded_at
    from source
)

select * from final

-- One bill per account and billing month: a correction (BILL_FLAG = C) replaces the bill it
-- corrects; among several versions the latest extract wins.
--
-- Incremental by billing month, as stg_mkt__customer_snapshots by archive month: a build
-- recomputes the billing months of the bill rows loaded since the last one (a late correction
-- of an old month rebuilds that month), each from all its versions (100,000 accounts, one
-- new month: 3.9-5.1 s → 1.2-1.6 s in the increment's build).
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key='bill_month',
    on_schema_change='sync_all_columns',
) }}
with source as (
    select * from {{ source('raw', 'mkt__monthly_bill') }}
    where {{ months_to_rebuild(
        'mkt__monthly_bill', month_start('BILL_YM'), month_start('BILL_YM'), 'loaded_at') }}
),

ranked as (
    select
        *,
        count(*) filter (where BILL_FLAG = 'C') over (partition by CONS_NO, BILL_YM) as n_corrections,
        row_number() over (
            partition by CONS_NO, BILL_YM
            order by BILL_FLAG = 'C' desc, REL_DATE desc nulls last, _source_file desc, _row_number desc
        ) as version_rank
    from source
),

final as (
    select
        {{ normalise_cons_no('CONS_NO') }} as customer_id,
        {{ month_start('BILL_YM') }} as bill_month,
        cast(T_PQ as decimal(14, 2)) as billed_kwh,
        cast(TIP_PQ as decimal(14, 2)) as tip_kwh,
        cast(PEAK_PQ as decimal(14, 2)) as peak_kwh,
        cast(FLAT_PQ as decimal(14, 2)) as flat_kwh,
        cast(VALLEY_PQ as decimal(14, 2)) as valley_kwh,
        cast(T_AMT as decimal(14, 2)) as amount_yuan,
        PRC_CODE as tariff_code,
        coalesce(TIP_PQ, 0) + coalesce(PEAK_PQ, 0) + coalesce(FLAT_PQ, 0) + coalesce(VALLEY_PQ, 0) > 0
            as is_tou_billed,
        BILL_FLAG = 'C' as is_correction,
        n_corrections,
        REL_DATE as issued_date,
        DUE_DATE as due_date,
        -- Period energies must add up to T_PQ on time-of-use bills (all 0 otherwise).
        case
            when coalesce(TIP_PQ, 0) + coalesce(PEAK_PQ, 0) + coalesce(FLAT_PQ, 0) + coalesce(VALLEY_PQ, 0) > 0
                then abs(T_PQ - (coalesce(TIP_PQ, 0) + coalesce(PEAK_PQ, 0) + coalesce(FLAT_PQ, 0) + coalesce(VALLEY_PQ, 0)))
                     > {{ var('tou_tolerance_kwh') }}
            else false
        end as has_tou_mismatch,
        _source_file as source_file,
        _loaded_at as loaded_at
    from ranked
    where version_rank = 1
)

select * from final

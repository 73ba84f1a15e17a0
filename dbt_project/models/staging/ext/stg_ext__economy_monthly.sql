-- Monthly district economic indices (same month last year = 100).
with source as (
    {{ latest_per_key('ext__economy_monthly') }}
),

final as (
    select
        {{ month_start('YM') }} as economy_month,
        DISTRICT_CODE as district_code,
        INDUSTRY_INDEX as industry_index,
        RETAIL_INDEX as retail_index,
        _source_file as source_file,
        _loaded_at as loaded_at
    from source
)

select * from final

-- Daily weather per district.
with source as (
    {{ latest_per_key('ext__weather_daily') }}
),

final as (
    select
        DATE as weather_date,
        DISTRICT_CODE as district_code,
        T_MAX as t_max_c,
        T_MIN as t_min_c,
        (T_MAX + T_MIN) / 2 as t_mean_c,
        PRECIP_MM as precipitation_mm,
        _source_file as source_file,
        _loaded_at as loaded_at
    from source
)

select * from final

-- Hourly load per customer (curve customers: commercial and industrial), the mean of the
-- hour's collected 15-minute points. Incremental by month: a new drop recomputes only the
-- months its curves touch (the largest model of the warehouse when rebuilt whole).
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key='load_month',
    on_schema_change='fail',
) }}

with points as (
    {{ curve_points(
        ref('stg_ami__load_curves'),
        months_to_rebuild('ami__load_curve', 'DATA_DATE', "date_trunc('month', reading_date)::date"),
    ) }}
),

final as (
    select
        customer_id,
        reading_date as load_date,
        (point_number - 1) // 4 as hour_of_day,
        date_trunc('month', reading_date)::date as load_month,
        avg(kw) as avg_kw,
        max(kw) as max_kw,
        count(kw) as points_collected,
        max(loaded_at) as source_loaded_at
    from points
    group by customer_id, reading_date, (point_number - 1) // 4
)

select * from final

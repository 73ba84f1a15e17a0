-- Hourly load per customer (curve customers: commercial and industrial), the mean of the
-- hour's collected 15-minute points.
with points as (
    select * from {{ ref('int_load_15min') }}
),

final as (
    select
        customer_id,
        reading_date as load_date,
        (point_number - 1) // 4 as hour_of_day,
        avg(kw) as avg_kw,
        max(kw) as max_kw,
        count(kw) as points_collected
    from points
    group by customer_id, reading_date, (point_number - 1) // 4
)

select * from final

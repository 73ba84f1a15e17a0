-- Hourly load per curve customer and hour: fct_daily_load_profile's 24 hours one row each.
-- An hour with no point collected has no row.
--
-- A view: as a table it repeated the profile's 6.5 M days as 155 M rows at 100,000 accounts
-- (48 s to write, 15 s to test its key). The analyst snapshot keeps it a view over its copy
-- of the profile.
{{ config(materialized='view') }}
with hours as (
    select
        customer_id,
        load_date,
        load_month,
        unnest(range(24)) as hour_of_day,
        unnest(avg_kw) as avg_kw,
        unnest(max_kw) as max_kw,
        unnest(points_collected) as points_collected,
        source_loaded_at
    from {{ ref('fct_daily_load_profile') }}
)

select
    customer_id,
    load_date,
    hour_of_day::integer as hour_of_day,
    load_month,
    avg_kw,
    max_kw,
    points_collected::bigint as points_collected,
    source_loaded_at
from hours
where points_collected > 0

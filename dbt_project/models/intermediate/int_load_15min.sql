{{ config(materialized='view') }}
-- The 96-point curves unpivoted: one row per meter and 15-minute interval (kW, average power).
with curves as (
    select * from {{ ref('stg_ami__load_curves') }}
),

unpivoted as (
    unpivot curves
    on {% for i in range(1, 97) %}p{{ i }}_kw{% if not loop.last %}, {% endif %}{% endfor %}
    into name point value kw
)

select
    customer_id,
    meter_id,
    reading_date,
    cast(regexp_extract(point, '[0-9]+') as integer) as point_number,
    reading_date + (cast(regexp_extract(point, '[0-9]+') as integer) - 1) * interval 15 minute
        as interval_start_at,
    kw
from unpivoted

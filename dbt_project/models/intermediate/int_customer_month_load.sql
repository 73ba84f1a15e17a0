-- Per curve customer and month: peak and mean power from the 15-minute points. Incremental by
-- month, as fct_hourly_load.
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key='load_month',
    on_schema_change='fail',
) }}

with curves as (
    select * from {{ ref('stg_ami__load_curves') }}
    where {{ months_to_rebuild('ami__load_curve', 'DATA_DATE', 'reading_date') }}
),

daily as (
    select
        customer_id,
        date_trunc('month', reading_date)::date as load_month,
        greatest({% for i in range(1, 97) %}p{{ i }}_kw{% if not loop.last %}, {% endif %}{% endfor %}) as peak_kw,
        ({% for i in range(1, 97) %}coalesce(p{{ i }}_kw, 0){% if not loop.last %} + {% endif %}{% endfor %})
            as kw_sum,
        {% for i in range(1, 97) %}(p{{ i }}_kw is not null)::integer{% if not loop.last %} + {% endif %}{% endfor %}
            as points,
        loaded_at
    from curves
)

select
    customer_id,
    load_month,
    max(peak_kw) as peak_kw,
    sum(kw_sum) as kw_sum,
    sum(points) as points,
    max(loaded_at) as source_loaded_at
from daily
group by customer_id, load_month

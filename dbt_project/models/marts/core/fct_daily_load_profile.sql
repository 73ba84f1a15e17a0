-- Hourly load per curve customer (commercial and industrial) and day: for each hour 0–23 the
-- mean and the maximum of its collected 15-minute points and how many were collected, as
-- 24-element lists. `fct_hourly_load` is the same data one row per hour (a view over this).
-- Incremental by month: a new drop recomputes only the months its curves touch (the largest
-- model of the warehouse when rebuilt whole).
--
-- Each hour's sum, count and maximum are column arithmetic on the curve's four points, added
-- up per customer and day where a day has two curves. Unnesting the 96 points first and
-- grouping them by hour took 3.4 times as long (10,000 accounts, one thread: 19.9 s against
-- 5.9 s). One row per day rather than per hour: at 100,000 accounts the model wrote 155 M
-- rows in 48 s and its key's test took 15 s; as 6.5 M rows of lists, 28 s and 1 s.
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key='load_month',
    on_schema_change='append_new_columns',
) }}
{% set hours = range(24) %}
{%- set in_rebuild = months_to_rebuild('ami__load_curve', 'DATA_DATE', 'reading_date') %}

-- A customer has two curves on a day only when a meter was changed that day. Only those days'
-- curves are added up: grouping all 6.5 M curve-days of 100,000 accounts, nearly one group
-- per row, was most of the model's time. The two sets read the staging view each (a shared
-- CTE would be materialised, 72 columns per curve; the view reads in 4 s).
with shared_days as (
    select customer_id, reading_date
    from {{ ref('stg_ami__load_curves') }}
    where {{ in_rebuild }}
    group by customer_id, reading_date
    having count(*) > 1
),

{%- for shared in [false, true] %}

{{ 'shared' if shared else 'single' }}_curves as (
    select
        curves.customer_id,
        curves.reading_date,
        curves.loaded_at,
        {%- for h in hours %}
        {% for q in range(1, 5) %}coalesce(p{{ 4 * h + q }}_kw, 0){{ ' + ' if not loop.last }}{% endfor %} as kw_sum_{{ h }},
        {% for q in range(1, 5) %}(p{{ 4 * h + q }}_kw is not null)::integer{{ ' + ' if not loop.last }}{% endfor %} as points_{{ h }},
        greatest({% for q in range(1, 5) %}p{{ 4 * h + q }}_kw{{ ', ' if not loop.last }}{% endfor %}) as max_kw_{{ h }}{{ ',' if not loop.last }}
        {%- endfor %}
    from {{ ref('stg_ami__load_curves') }} as curves
    {{ 'semi' if shared else 'anti' }} join shared_days
        on shared_days.customer_id is not distinct from curves.customer_id
        and shared_days.reading_date = curves.reading_date
    where {{ in_rebuild }}
),
{%- endfor %}

days as (
    select * from single_curves
    union all
    select
        customer_id,
        reading_date,
        max(loaded_at) as loaded_at,
        {%- for h in hours %}
        sum(kw_sum_{{ h }}) as kw_sum_{{ h }},
        sum(points_{{ h }}) as points_{{ h }},
        max(max_kw_{{ h }}) as max_kw_{{ h }}{{ ',' if not loop.last }}
        {%- endfor %}
    from shared_curves
    group by customer_id, reading_date
),

final as (
    select
        customer_id,
        reading_date as load_date,
        date_trunc('month', reading_date)::date as load_month,
        -- An hour with no point collected has a null mean.
        [{% for h in hours %}kw_sum_{{ h }} / nullif(points_{{ h }}, 0){{ ', ' if not loop.last }}{% endfor %}]::double[] as avg_kw,
        [{% for h in hours %}max_kw_{{ h }}{{ ', ' if not loop.last }}{% endfor %}]::double[] as max_kw,
        [{% for h in hours %}points_{{ h }}{{ ', ' if not loop.last }}{% endfor %}]::integer[] as points_collected,
        loaded_at as source_loaded_at,
        -- The build's stamp, so that the row tests read only what the last build wrote.
        {{ build_stamp() }} as built_at
    from days
)

select * from final

-- One row per work order and service-level measure that applies to it (seed sla_targets): the
-- target, the measured minutes and the outcome. An order still open past its target at the
-- data's end has breached it; one still open within it is `open`; one whose times are out of
-- order or missing is `unmeasured`. Orders of unknown customers (no district) are held to the
-- stricter of the urban and rural targets.
with orders as (
    select * from {{ ref('fct_work_orders') }}
),

districts as (
    select district_code, area_type from {{ ref('districts') }}
),

targets as (
    select * from {{ ref('sla_targets') }}
),

data_end as (
    select max(accepted_at) as data_end_at from orders
),

orders_with_area as (
    select
        orders.*,
        districts.area_type,
        districts.area_type is null as is_area_assumed
    from orders
    left join districts using (district_code)
),

applicable as (
    select
        o.*,
        t.measure,
        t.target_minutes,
        row_number() over (
            partition by o.work_order_id, t.measure order by t.target_minutes
        ) as strictness
    from orders_with_area as o
    inner join targets as t
        on o.order_type_en = t.order_type_en
        and (t.area_type = 'all' or t.area_type = o.area_type or o.area_type is null)
),

measured as (
    select
        applicable.*,
        case measure
            when 'response' then response_minutes
            when 'arrival' then arrival_minutes
            when 'completion' then completion_minutes
        end as actual_minutes,
        case measure
            when 'response' then dispatched_at
            when 'arrival' then arrived_at
            when 'completion' then finished_at
        end as reached_at,
        {{ dbt.datediff('accepted_at', 'data_end_at', 'second') }} / 60.0 as minutes_to_data_end
    from applicable
    cross join data_end
    where strictness = 1
),

final as (
    select
        work_order_id,
        customer_id,
        district_code,
        coalesce(area_type, 'unknown') as area_type,
        is_area_assumed,
        channel,
        channel_name,
        order_type_en,
        accepted_at,
        accepted_month,
        measure,
        target_minutes,
        actual_minutes,
        case
            when has_time_disorder then 'unmeasured'
            when actual_minutes is not null and actual_minutes <= target_minutes then 'met'
            when actual_minutes is not null then 'breached'
            when reached_at is null and not is_finished and minutes_to_data_end > target_minutes
                then 'breached'
            when reached_at is null and not is_finished then 'open'
            else 'unmeasured'
        end as sla_status,
        is_known_customer
    from measured
)

select
    *,
    case sla_status when 'met' then true when 'breached' then false end as is_met
from final

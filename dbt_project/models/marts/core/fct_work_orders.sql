-- One row per work order (its latest version), with response, arrival and completion times
-- in minutes; orders whose times are out of order get no durations (`has_time_disorder`).
with orders as (
    select * from {{ ref('stg_crm__work_orders') }}
),

scores as (
    select * from {{ ref('satisfaction_scores') }}
),

customers as (
    select customer_id, district_code from {{ ref('dim_customer') }}
),

final as (
    select
        orders.work_order_id,
        orders.version,
        orders.n_versions,
        orders.customer_id,
        orders.cons_no_form,
        customers.district_code,
        orders.channel,
        orders.channel_name,
        orders.order_type,
        orders.order_type_en,
        orders.sub_type,
        orders.status,
        orders.status_en,
        orders.accepted_at,
        date_trunc('month', orders.accepted_at)::date as accepted_month,
        orders.dispatched_at,
        orders.arrived_at,
        orders.finished_at,
        case when not orders.has_time_disorder
            then date_diff('second', orders.accepted_at, orders.dispatched_at) / 60.0 end as response_minutes,
        case when not orders.has_time_disorder
            then date_diff('second', orders.accepted_at, orders.arrived_at) / 60.0 end as arrival_minutes,
        case when not orders.has_time_disorder
            then date_diff('second', orders.accepted_at, orders.finished_at) / 60.0 end as completion_minutes,
        orders.finished_at is not null as is_finished,
        orders.has_time_disorder,
        orders.satisfaction,
        scores.satisfaction_score,
        customers.customer_id is not null as is_known_customer
    from orders
    left join scores using (satisfaction)
    left join customers using (customer_id)
)

select * from final

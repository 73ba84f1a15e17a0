-- Outages attributed to the customers fed from the transformer area (TG_ID) at the time the
-- outage started, per the archive history; closed accounts are not attributed.
-- Computed whole, written where it changed (macros/changed_rows.sql).
{{ config(
    materialized='incremental',
    incremental_strategy='replace_rows',
    unique_key=['customer_id', 'outage_id'],
    rebuild_marker='tg_id',
    on_schema_change='append_new_columns',
) }}
with outages as (
    select * from {{ ref('stg_om__outages') }}
),

history as (
    select customer_id, tg_id, valid_from, valid_to, status_code
    from {{ ref('dim_customer_history') }}
),

final as (
    select
        history.customer_id,
        outages.outage_id,
        outages.tg_id,
        outages.started_at,
        outages.ended_at,
        date_trunc('month', outages.started_at)::date as started_month,
        outages.outage_type,
        outages.outage_type_en,
        outages.is_ongoing,
        case when not outages.has_time_disorder and not outages.is_ongoing
            then date_diff('second', outages.started_at, outages.ended_at) / 60.0 end as outage_minutes,
        outages.has_time_disorder
    from outages
    join history
        on history.tg_id = outages.tg_id
        and date_trunc('month', outages.started_at) >= history.valid_from
        and (history.valid_to is null or date_trunc('month', outages.started_at) < history.valid_to)
        and history.status_code <> '9'
)

{{ changed_rows() }}

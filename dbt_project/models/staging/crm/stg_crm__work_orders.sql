-- The latest version of each work order (its truth), with timestamps made consistent
-- (`Z` and `+08:00` both → Asia/Shanghai wall-clock time) and the account number normalised.
with versions as (
    {{ latest_per_key('crm__work_order') }}
),

latest as (
    select
        *,
        count(*) over (partition by order_no) as n_versions
    from versions
    qualify row_number() over (partition by order_no order by version desc) = 1
),

typed as (
    select
        order_no as work_order_id,
        version,
        n_versions,
        {{ normalise_cons_no('cons_no') }} as customer_id,
        case
            when cons_no is null or trim(cons_no) = '' then 'missing'
            when {{ normalise_cons_no('cons_no') }} is null then 'invalid'
            when upper(trim(cons_no)) like 'HB%' then 'hb_prefix'
            when regexp_matches(cons_no, '\s') then 'spaces'
            when length(cons_no) < 10 then 'zeros_dropped'
            else 'standard'
        end as cons_no_form,
        channel,
        {{ code_label('crm__work_order', 'channel', 'channel') }} as channel_name,
        order_type,
        {{ code_label('crm__work_order', 'order_type', 'order_type') }} as order_type_en,
        sub_type,
        {{ to_shanghai('accept_time') }} as accepted_at,
        {{ to_shanghai('dispatch_time') }} as dispatched_at,
        {{ to_shanghai('arrive_time') }} as arrived_at,
        {{ to_shanghai('finish_time') }} as finished_at,
        status,
        {{ code_label('crm__work_order', 'status', 'status') }} as status_en,
        satisfaction,
        content,
        _source_file as source_file,
        _loaded_at as loaded_at
    from latest
),

final as (
    select
        *,
        -- Times out of order cannot be measured: flagged and left out of SLA figures.
        coalesce(
            finished_at < accepted_at or arrived_at < accepted_at or dispatched_at < accepted_at,
            false
        ) as has_time_disorder
    from typed
)

select * from final

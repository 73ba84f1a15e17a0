-- Each account's archive attributes over time, from the monthly snapshots: one row per run of
-- months with the same attributes, valid from its first month to (excluding) valid_to.
-- A month without a snapshot (a rejected archive file) extends the run before it.
{% set tracked = [
    'elec_type_code', 'volt_code', 'trade_code', 'status_code', 'contract_capacity_kva',
    'org_no', 'district_code', 'tg_id', 'special_flag', 'is_tou', 'opened_date',
    'closed_date', 'has_mobile', 'birth_year', 'cert_kind'
] %}

with snapshots as (
    select * from {{ ref('stg_mkt__customer_snapshots') }}
),

last_snapshot as (
    select max(snapshot_month) as snapshot_month from snapshots
),

changes as (
    select
        *,
        {{ row_hash(tracked) }} as attributes_hash
    from snapshots
),

flagged as (
    select
        *,
        attributes_hash is distinct from lag(attributes_hash) over by_customer as is_new_run
    from changes
    window by_customer as (partition by customer_id order by snapshot_month)
),

runs as (
    select
        *,
        sum(is_new_run::integer) over (
            partition by customer_id order by snapshot_month rows unbounded preceding
        ) as run_number
    from flagged
),

collapsed as (
    select
        customer_id,
        run_number,
        min(snapshot_month) as valid_from,
        max(snapshot_month) as last_seen_month,
        {%- for c in tracked %}
        any_value({{ c }}) as {{ c }},
        {%- endfor %}
        count(*) as snapshots_seen
    from runs
    group by customer_id, run_number
),

final as (
    select
        customer_id,
        valid_from,
        coalesce(
            lead(valid_from) over (partition by customer_id order by valid_from),
            -- Gone from the latest snapshot: the account ends after the last month it was seen.
            case
                when last_seen_month < (select snapshot_month from last_snapshot)
                    then last_seen_month + interval 1 month
            end
        )::date as valid_to,
        {%- for c in tracked %}
        {{ c }},
        {%- endfor %}
        snapshots_seen
    from collapsed
)

select
    *,
    valid_to is null as is_current
from final

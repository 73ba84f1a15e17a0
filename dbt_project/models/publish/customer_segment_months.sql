-- Every customer-month's business segment: from the model run of that month (`scored`), else
-- the latest earlier run (`carried_forward`), else — before the first run — the earliest later
-- one (`carried_back`). A segment change counts only between months that both have a run at or
-- before them, so back-filled history never shows changes the models did not see.
with months as (
    select customer_id, as_of_month, is_residential, district_code
    from {{ ref('customer_features') }}
),

segments as (
    select customer_id, as_of_month as scored_month, segment_code
    from {{ source('ml', 'customer_segments') }}
),

candidates as (
    select
        months.*,
        segments.scored_month,
        segments.segment_code,
        row_number() over (
            partition by months.customer_id, months.as_of_month
            order by
                case when segments.scored_month <= months.as_of_month then 0 else 1 end,
                case when segments.scored_month <= months.as_of_month
                    then {{ dbt.datediff('segments.scored_month', 'months.as_of_month', 'day') }}
                    else {{ dbt.datediff('months.as_of_month', 'segments.scored_month', 'day') }}
                end
        ) as pick
    from months
    inner join segments using (customer_id)
),

picked as (
    select
        *,
        case
            when scored_month = as_of_month then 'scored'
            when scored_month < as_of_month then 'carried_forward'
            else 'carried_back'
        end as segment_basis
    from candidates
    where pick = 1
),

final as (
    select
        *,
        lag(segment_code) over (partition by customer_id order by as_of_month) as previous_segment_code,
        lag(segment_basis) over (partition by customer_id order by as_of_month) as previous_basis
    from picked
)

select
    customer_id,
    as_of_month,
    is_residential,
    district_code,
    segment_code,
    scored_month,
    segment_basis,
    previous_segment_code,
    coalesce(
        segment_basis <> 'carried_back'
        and previous_basis <> 'carried_back'
        and segment_code <> previous_segment_code,
        false
    ) as has_changed_segment
from final

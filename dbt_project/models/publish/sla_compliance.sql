-- Service-level compliance by month × segment × district × channel × order type × measure.
-- Rates count only measured outcomes (met or breached); open and unmeasured orders are shown
-- beside them so nothing is silently left out.
with levels as (
    select * from {{ ref('fct_service_levels') }}
),

segments as (
    select customer_id, as_of_month, segment_code from {{ ref('customer_segment_months') }}
),

districts as (
    select district_code, district_name_zh, district_name_en from {{ ref('districts') }}
),

joined as (
    select
        levels.*,
        coalesce(segments.segment_code, 'unsegmented') as segment_code
    from levels
    left join segments
        on levels.customer_id = segments.customer_id
        and levels.accepted_month = segments.as_of_month
),

final as (
    select
        accepted_month as month,
        segment_code,
        coalesce(joined.district_code, 'unknown') as district_code,
        coalesce(districts.district_name_en, 'unknown') as district_name_en,
        channel,
        order_type_en,
        measure,
        min(target_minutes) as target_minutes_min,
        max(target_minutes) as target_minutes_max,
        count(*) as orders,
        count(*) filter (where sla_status = 'met') as met,
        count(*) filter (where sla_status = 'breached') as breached,
        count(*) filter (where sla_status = 'open') as open,
        count(*) filter (where sla_status = 'unmeasured') as unmeasured,
        {{ safe_ratio("count(*) filter (where sla_status = 'met')",
                      "count(*) filter (where sla_status in ('met', 'breached'))") }} as compliance_rate,
        avg(actual_minutes) as avg_minutes,
        quantile_cont(actual_minutes, 0.9) as p90_minutes
    from joined
    left join districts using (district_code)
    group by 1, 2, 3, 4, 5, 6, 7
)

select * from final

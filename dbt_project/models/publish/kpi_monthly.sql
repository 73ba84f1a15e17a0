-- Management KPIs by month × business segment: customers, energy, revenue and its growth,
-- complaints, satisfaction, arrears and the customers who changed segment.
with features as (
    select customer_id, as_of_month, kwh_month, bill_yuan_month, arrears_yuan
    from {{ ref('customer_features') }}
),

segments as (
    select customer_id, as_of_month, segment_code, segment_basis, has_changed_segment
    from {{ ref('customer_segment_months') }}
),

orders as (
    select customer_id, accepted_month, order_type_en, satisfaction_score
    from {{ ref('fct_work_orders') }}
    where is_known_customer
),

orders_by_customer_month as (
    select
        customer_id,
        accepted_month as as_of_month,
        count(*) filter (where order_type_en = 'complaint') as complaints,
        sum(satisfaction_score) as satisfaction_sum,
        count(satisfaction_score) as satisfaction_answers
    from orders
    group by customer_id, accepted_month
),

customer_months as (
    select
        features.*,
        coalesce(segments.segment_code, 'unsegmented') as segment_code,
        coalesce(segments.segment_basis, 'none') as segment_basis,
        coalesce(segments.has_changed_segment, false) as has_changed_segment,
        coalesce(o.complaints, 0) as complaints,
        coalesce(o.satisfaction_sum, 0) as satisfaction_sum,
        coalesce(o.satisfaction_answers, 0) as satisfaction_answers
    from features
    left join segments using (customer_id, as_of_month)
    left join orders_by_customer_month as o using (customer_id, as_of_month)
),

by_segment as (
    select
        as_of_month as month,
        segment_code,
        count(*) as customers,
        count(*) filter (where segment_basis = 'scored') as customers_scored,
        sum(kwh_month) as kwh,
        sum(bill_yuan_month) as revenue_yuan,
        sum(complaints) as complaints,
        {{ safe_ratio('1000.0 * sum(complaints)', 'count(*)') }} as complaints_per_1000,
        {{ safe_ratio('sum(satisfaction_sum)', 'sum(satisfaction_answers)') }} as satisfaction_avg,
        sum(satisfaction_answers) as satisfaction_answers,
        {{ safe_ratio('count(*) filter (where arrears_yuan > 0)', 'count(*)') }} as arrears_rate,
        sum(arrears_yuan) as arrears_yuan,
        count(*) filter (where has_changed_segment) as customers_changed_segment
    from customer_months
    group by as_of_month, segment_code
),

final as (
    select
        current.*,
        {{ safe_ratio('current.revenue_yuan', 'last_month.revenue_yuan') }} - 1 as revenue_growth_mom,
        {{ safe_ratio('current.revenue_yuan', 'last_year.revenue_yuan') }} - 1 as revenue_growth_yoy
    from by_segment as current
    left join by_segment as last_month
        on current.segment_code = last_month.segment_code
        and last_month.month = cast({{ dbt.dateadd('month', -1, 'current.month') }} as date)
    left join by_segment as last_year
        on current.segment_code = last_year.segment_code
        and last_year.month = cast({{ dbt.dateadd('month', -12, 'current.month') }} as date)
)

select * from final

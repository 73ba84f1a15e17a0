-- The feature grain: every customer for every month the archive history covers it, up to the
-- latest month any archive snapshot describes, with the attributes valid in that month.
with history as (
    select * from {{ ref('dim_customer_history') }}
),

bounds as (
    select max(valid_from) as last_month from history
),

final as (
    select
        history.customer_id,
        unnest(generate_series(
            history.valid_from,
            coalesce(history.valid_to - interval 1 month, (select last_month from bounds)),
            interval 1 month
        ))::date as as_of_month,
        history.elec_type_code,
        history.elec_type_code = '100' as is_residential,
        history.district_code,
        history.status_code,
        history.special_flag,
        history.is_tou,
        history.trade_code,
        history.contract_capacity_kva,
        history.opened_date,
        history.birth_year
    from history
)

select
    *,
    year(as_of_month) * 12 + month(as_of_month) as month_index
from final

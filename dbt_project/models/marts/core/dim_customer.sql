-- Every account any archive snapshot knows, as of its latest snapshot (closed ones included).
with history as (
    select * from {{ ref('dim_customer_history') }}
),

latest as (
    select * from history
    qualify row_number() over (partition by customer_id order by valid_from desc) = 1
),

first_seen as (
    select customer_id, min(valid_from) as first_seen_month from history group by customer_id
),

districts as (
    select * from {{ ref('districts') }}
),

final as (
    select
        latest.customer_id,
        latest.elec_type_code,
        {{ code_label('mkt__cons_archive', 'elec_type_code', 'latest.elec_type_code', 'zh') }} as elec_type_name_zh,
        {{ code_label('mkt__cons_archive', 'elec_type_code', 'latest.elec_type_code') }} as elec_type_name_en,
        latest.elec_type_code = '100' as is_residential,
        latest.volt_code,
        latest.trade_code,
        latest.status_code,
        {{ code_label('mkt__cons_archive', 'status_code', 'latest.status_code') }} as status,
        latest.contract_capacity_kva,
        latest.org_no,
        latest.district_code,
        districts.district_name_zh,
        districts.district_name_en,
        districts.area_type,
        latest.tg_id,
        latest.special_flag,
        {{ code_label('mkt__cons_archive', 'special_flag', 'latest.special_flag') }} as special_group,
        latest.special_flag <> '0' as is_special_group,
        latest.is_tou,
        latest.opened_date,
        latest.closed_date,
        latest.has_mobile,
        latest.birth_year,
        latest.cert_kind,
        first_seen.first_seen_month,
        latest.valid_from as attributes_since,
        latest.valid_to is not null as has_left_archive
    from latest
    join first_seen using (customer_id)
    left join districts on districts.district_code = latest.district_code
)

select * from final

-- One row per account and archive month (the month-end the snapshot describes).
with source as (
    {{ latest_per_key('mkt__cons_archive') }}
),

final as (
    select
        {{ normalise_cons_no('CONS_NO') }} as customer_id,
        {{ month_start('_period') }} as snapshot_month,
        ELEC_TYPE_CODE as elec_type_code,
        {{ code_label('mkt__cons_archive', 'elec_type_code', 'ELEC_TYPE_CODE', 'zh') }} as elec_type_name_zh,
        {{ code_label('mkt__cons_archive', 'elec_type_code', 'ELEC_TYPE_CODE') }} as elec_type_name_en,
        ELEC_TYPE_CODE = '100' as is_residential,
        VOLT_CODE as volt_code,
        {{ code_label('mkt__cons_archive', 'volt_code', 'VOLT_CODE') }} as voltage,
        TRADE_CODE as trade_code,
        STATUS_CODE as status_code,
        {{ code_label('mkt__cons_archive', 'status_code', 'STATUS_CODE') }} as status,
        cast(CONTRACT_CAP as decimal(12, 2)) as contract_capacity_kva,
        ORG_NO as org_no,
        left(ORG_NO, 6) as district_code,
        TG_ID as tg_id,
        coalesce(SPECIAL_FLAG, '0') as special_flag,
        {{ code_label('mkt__cons_archive', 'special_flag', "coalesce(SPECIAL_FLAG, '0')") }} as special_group,
        TOU_FLAG = 'Y' as is_tou,
        {{ yyyymmdd('BUILD_DATE') }} as opened_date,
        {{ yyyymmdd('CANCEL_DATE') }} as closed_date,
        HAS_MOBILE as has_mobile,
        BIRTH_YEAR as birth_year,
        CERT_KIND as cert_kind,
        _source_file as source_file,
        _loaded_at as loaded_at
    from source
)

select * from final

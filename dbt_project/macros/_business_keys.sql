{#- Generated from the data contracts by `python -m data_contracts.dbt_sources`. -#}
{% macro business_key(table_name) -%}
    {{ return({"ami__daily_reading": ["METER_ID", "DATA_DATE"], "ami__load_curve": ["METER_ID", "DATA_DATE"], "ami__meter_change": ["CONS_NO", "OLD_METER_ID", "NEW_METER_ID"], "crm__work_order": ["order_no", "version"], "ext__economy_monthly": ["YM", "DISTRICT_CODE"], "ext__weather_daily": ["DATE", "DISTRICT_CODE"], "fin__arrears": ["CONS_NO", "BILL_YM", "SNAP_DATE"], "fin__payment": ["PAY_SN"], "mkt__cons_archive": ["CONS_NO", "_period"], "mkt__monthly_bill": ["CONS_NO", "BILL_YM"], "om__outage": ["OUTAGE_ID"]}[table_name]) }}
{%- endmacro %}

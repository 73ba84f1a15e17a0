{#- The staging of the daily readings, stg_ami__daily_readings: one reading per meter and day
    (the latest extract wins). A macro so that int_meter_readings' incremental build can read
    it for its last weeks only (`where`, on DATA_DATE: see latest_per_key), with the same
    columns as the view. -#}
{% macro daily_readings(where=none) -%}
with source as (
    {{ latest_per_key('ami__daily_reading', where=where) }}
),

final as (
    select
        METER_ID as meter_id,
        {{ normalise_cons_no('CONS_NO') }} as customer_id,
        DATA_DATE as reading_date,
        PAP_R as register_kwh,
        PAP_R1 as register_tip_kwh,
        PAP_R2 as register_peak_kwh,
        PAP_R3 as register_flat_kwh,
        PAP_R4 as register_valley_kwh,
        COLL_TIME as collected_at,
        _source_file as source_file,
        _loaded_at as loaded_at
    from source
)

select * from final
{%- endmacro %}

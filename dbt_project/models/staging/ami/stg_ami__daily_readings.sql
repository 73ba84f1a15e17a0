-- One reading per meter and day (the latest extract wins).
with source as (
    {{ latest_per_key('ami__daily_reading') }}
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

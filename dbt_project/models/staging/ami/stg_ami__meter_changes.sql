-- One row per meter replacement.
with source as (
    {{ latest_per_key('ami__meter_change') }}
),

final as (
    select
        {{ normalise_cons_no('CONS_NO') }} as customer_id,
        OLD_METER_ID as old_meter_id,
        NEW_METER_ID as new_meter_id,
        CHANGE_DATE as changed_date,
        OLD_FINAL_R as old_final_register_kwh,
        NEW_INIT_R as new_initial_register_kwh,
        _source_file as source_file,
        _loaded_at as loaded_at
    from source
)

select * from final

-- One 96-point curve per meter and day (the latest extract wins), kept wide as delivered.
with source as (
    {{ latest_per_key('ami__load_curve') }}
),

final as (
    select
        METER_ID as meter_id,
        {{ normalise_cons_no('CONS_NO') }} as customer_id,
        DATA_DATE as reading_date,
        {%- for i in range(1, 97) %}
        P{{ i }} as p{{ i }}_kw,
        {%- endfor %}
        _source_file as source_file,
        _loaded_at as loaded_at
    from source
)

select * from final

-- Each meter's register series, ready to difference: the readings, plus the register values
-- a meter change records (the old meter's final value on the change day, the new meter's
-- initial value as if read at 24:00 the day before), with spikes flagged — a reading out of
-- line with both neighbours while the neighbours agree with each other.
{% set registers = ['register_kwh', 'register_tip_kwh', 'register_peak_kwh', 'register_flat_kwh', 'register_valley_kwh'] %}

with readings as (
    select
        meter_id,
        customer_id,
        reading_date,
        {{ registers | join(', ') }},
        false as is_from_meter_change
    from {{ ref('stg_ami__daily_readings') }}
),

changes as (
    select * from {{ ref('stg_ami__meter_changes') }}
),

change_points as (
    select
        old_meter_id as meter_id,
        customer_id,
        changed_date as reading_date,
        old_final_register_kwh as register_kwh,
        null::double as register_tip_kwh,
        null::double as register_peak_kwh,
        null::double as register_flat_kwh,
        null::double as register_valley_kwh,
        true as is_from_meter_change
    from changes
    union all
    select
        new_meter_id,
        customer_id,
        changed_date - 1,
        new_initial_register_kwh,
        null, null, null, null,
        true
    from changes
),

combined as (
    select * from readings
    union all
    select * from change_points
    -- A real reading of the same meter and day wins over a recorded change value.
    qualify row_number() over (
        partition by meter_id, customer_id, reading_date order by is_from_meter_change
    ) = 1
),

neighbours as (
    select
        *,
        lag(register_kwh) over by_meter as previous_kwh,
        lead(register_kwh) over by_meter as next_kwh,
        row_number() over by_meter as reading_number
    from combined
    window by_meter as (partition by customer_id, meter_id order by reading_date)
),

final as (
    select
        meter_id,
        customer_id,
        reading_date,
        {{ registers | join(', ') }},
        is_from_meter_change,
        coalesce(
            not is_from_meter_change
            and next_kwh >= previous_kwh
            and (register_kwh > next_kwh or register_kwh < previous_kwh),
            false
        ) as is_spike,
        reading_number
    from neighbours
)

select * from final

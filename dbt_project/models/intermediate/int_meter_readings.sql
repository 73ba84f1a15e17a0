-- Each meter's register series, ready to difference: the readings, plus the register values
-- a meter change records (the old meter's final value on the change day, the new meter's
-- initial value as if read at 24:00 the day before), with spikes flagged — a reading out of
-- line with both neighbours while the neighbours agree with each other.
--
-- Incremental per series, a meter's points under one account (macros/series_rebuild.sql): a
-- series that raw rows loaded since the last build touch, from its earliest new point d0, is
-- rebuilt from its last point before d0 (whose spike flag looks at the next point), with the
-- point before that as context. Series are independent (every window is per series), so the
-- meter's other series are left as they are. A new reading that moves a meter's day to
-- another account takes a point from a series no new row names: it rebuilds every series.
{{ config(
    materialized='incremental',
    incremental_strategy='replace_from',
    rebuild_key=['meter_id', 'customer_id'],
    rebuild_date='reading_date',
    on_schema_change='ignore'
) }}
{% set registers = ['register_kwh', 'register_tip_kwh', 'register_peak_kwh', 'register_flat_kwh', 'register_valley_kwh'] %}

{%- set partial = false -%}
{%- if is_incremental() -%}
    {%- set daily, changes = source('raw', 'ami__daily_reading'), source('raw', 'ami__meter_change') -%}
    {%- set loaded_before = own_watermark('source_loaded_at') -%}
    {%- set touched_sql -%}
        -- The series new raw rows touch and the earliest date they touch: a reading's day; a
        -- change record's day before the change, for every version of the record (a
        -- re-extract may move the change to another day; its account is part of its key).
        new_changes as (
            select distinct CONS_NO, OLD_METER_ID, NEW_METER_ID
            from {{ changes }} where _loaded_at > {{ loaded_before }}
        ),
        change_versions as (
            select {{ normalise_cons_no('version.CONS_NO') }} as customer_id,
                version.OLD_METER_ID, version.NEW_METER_ID, version.CHANGE_DATE
            from {{ changes }} as version
            semi join new_changes on version.CONS_NO is not distinct from new_changes.CONS_NO
                and version.OLD_METER_ID is not distinct from new_changes.OLD_METER_ID
                and version.NEW_METER_ID is not distinct from new_changes.NEW_METER_ID
        ),
        new_points as (
            select METER_ID as meter_id, {{ normalise_cons_no('CONS_NO') }} as customer_id, DATA_DATE as point_date
            from {{ daily }} where _loaded_at > {{ loaded_before }}
            union all
            select OLD_METER_ID, customer_id, CHANGE_DATE - 1 from change_versions
            union all
            select NEW_METER_ID, customer_id, CHANGE_DATE - 1 from change_versions
        ),
        touched as (
            select meter_id, customer_id, min(point_date) as first_new_date
            from new_points group by meter_id, customer_id
        )
    {%- endset -%}
    {#- A reading re-extracted under another account takes a point from the old account's
        series, which no new row names: this table would keep it there, and int_daily_energy
        (per account) could not know the old one. Everything is rebuilt, and it follows. -#}
    {%- set first_fresh = scalar_query(
        "select coalesce(min(DATA_DATE), 'infinity'::date)::varchar from " ~ daily
        ~ " where _loaded_at > " ~ loaded_before, "infinity") -%}
    {#- Only a day loaded before can move: new rows are compared with the raw versions of
        their days, from the first new day on, so the scan skips the older row groups
        (comparing them with this table instead took 12.7 s of 45 at 100,000 accounts). -#}
    {%- set moved = scalar_query(
        "select count(*) from " ~ daily ~ " as fresh join " ~ daily ~ " as earlier
           on earlier.METER_ID = fresh.METER_ID and earlier.DATA_DATE = fresh.DATA_DATE
         where fresh._loaded_at > " ~ loaded_before ~ " and earlier._loaded_at <= " ~ loaded_before ~ "
           and fresh.DATA_DATE >= '" ~ first_fresh ~ "'::date
           and earlier.DATA_DATE >= '" ~ first_fresh ~ "'::date
           and " ~ normalise_cons_no('earlier.CONS_NO') ~ " is distinct from " ~ normalise_cons_no('fresh.CONS_NO'), 0) -%}
    {%- set partial = moved == 0 -%}
    {%- if partial -%}
        {#- The kept points are looked up from a month before the first new point on: at
            100,000 accounts a new month touches every series, and joining them with all 74 M
            points took 2.0 s, alone and warm, twice (read_from below, then the SELECT); from a
            month before, 0.7 s. (The model in the increment's build: 16.7 s → 11.1 s, with
            `combined` below.) -#}
        {%- set near = scalar_query("with " ~ touched_sql ~ " select coalesce((min(first_new_date) - 31)::varchar, 'infinity') from touched", "infinity") -%}
        {%- set bounds_sql -%}
            {{ touched_sql }},
            -- Per touched series, its last kept point before the first new one (rebuilt: its spike
            -- flag looks at the next point), and that point's predecessor, for the window to see.
            -- Looked up among the points from `near` on; a series with none there before its
            -- first new point (a new one, or one silent for a month) in the whole table.
            {%- for name, series, days in [('last_near', 'touched', '>='), ('last_far', 'far', '<')] %}
            {{ name }} as (
                select kept.meter_id, kept.customer_id, kept.reading_date, kept.previous_reading_date
                from {{ this }} as kept
                join {{ series }} on kept.meter_id = {{ series }}.meter_id
                    and kept.customer_id is not distinct from {{ series }}.customer_id
                    and kept.reading_date < {{ series }}.first_new_date
                where kept.reading_date {{ days }} '{{ near }}'::date
                qualify row_number() over (partition by kept.meter_id, kept.customer_id order by kept.reading_date desc) = 1
            ),
            {%- if loop.first %}
            far as (
                select * from touched
                anti join last_near on touched.meter_id = last_near.meter_id
                    and touched.customer_id is not distinct from last_near.customer_id
            ),
            {%- endif %}
            {%- endfor %}
            bounds as (
                select
                    touched.meter_id,
                    touched.customer_id,
                    coalesce(last_before.reading_date, touched.first_new_date) as rebuild_from,
                    coalesce(last_before.previous_reading_date, last_before.reading_date, touched.first_new_date) as context_from
                from touched
                left join (select * from last_near union all select * from last_far) as last_before
                    on touched.meter_id = last_before.meter_id
                    and touched.customer_id is not distinct from last_before.customer_id
            )
        {%- endset -%}
        {%- set read_from = scalar_query("with " ~ bounds_sql ~ " select coalesce(min(context_from), 'infinity'::date)::varchar from bounds", "-infinity") -%}
    {%- endif -%}
{%- endif %}
{#- The staged readings; an incremental build's from read_from on, filtered before the staging
    looks for days extracted twice, so that it counts the last weeks' raw rows, not all of
    them (100,000 accounts: 24 s of the increment's 42, alone). -#}
{%- set recent = "DATA_DATE >= '" ~ read_from ~ "'::date" if partial else none %}
{%- set recent_readings = "(" ~ daily_readings(recent) ~ ")" if partial else ref('stg_ami__daily_readings') %}
{#- The staged readings of the meters a change names (change_days_read). -#}
{%- set changed_meters = "METER_ID in (select old_meter_id from changes union all select new_meter_id from changes)" %}
{%- set changed_meters_readings = "(" ~ daily_readings(changed_meters ~ (" and " ~ recent if partial else "")) ~ ")" %}

with
{% if partial -%}
{{ bounds_sql }},
{%- endif %}

readings as (
    select
        meter_id,
        customer_id,
        reading_date,
        {{ registers | join(', ') }},
        false as is_from_meter_change,
        loaded_at as source_loaded_at
    from {{ recent_readings }}
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
        true as is_from_meter_change,
        loaded_at as source_loaded_at
    from changes
    union all
    select
        new_meter_id,
        customer_id,
        changed_date - 1,
        new_initial_register_kwh,
        null, null, null, null,
        true,
        loaded_at
    from changes
),

-- A real reading of the same meter and day wins over a recorded change value. Only a change's
-- points can collide, so only they are looked up among the readings: a window over every
-- point to pick one per day cost a second sort of all the readings, and at 100,000 accounts
-- more memory than DUCKDB_MEMORY_LIMIT's 4 GiB. They are looked up among the staged readings
-- of the meters a change names, not in `readings` nor in the staging view whole: DuckDB keeps
-- a CTE read twice as one materialised result (all 71 M readings of 100,000 accounts, spilled
-- to disk), and the view read twice de-duplicates every raw row twice. At 100,000 accounts,
-- alone: 97.1 s with the view read twice (DuckDB's `common_subplan` kept it whole), 71.3 s
-- with that optimizer off (profiles.yml), 58.2 s with the changed meters' readings apart.
-- An incremental build keeps no point before read_from, so it looks up only those days.
change_days_read as (
    select readings.meter_id, readings.customer_id, readings.reading_date
    from {{ changed_meters_readings }} as readings
    semi join change_points on readings.meter_id = change_points.meter_id
        and readings.customer_id is not distinct from change_points.customer_id
        and readings.reading_date = change_points.reading_date
),

change_points_kept as (
    select * from change_points
    anti join change_days_read on change_points.meter_id = change_days_read.meter_id
        and change_points.customer_id is not distinct from change_days_read.customer_id
        and change_points.reading_date = change_days_read.reading_date
    -- Two change records giving one meter a point on the same day: one is kept.
    qualify row_number() over (
        partition by meter_id, customer_id, reading_date order by register_kwh
    ) = 1
),

-- An incremental build keeps a rebuilt series' points from its context on, each with the
-- day its rebuild starts. (Filtered with EXISTS, a correlated lookup, then joined again for
-- that day: 1.4 s of the 4.2 s the model's SELECT took alone at 100,000 accounts.)
combined as (
    select points.*{{ ', bounds.rebuild_from' if partial }}
    from (
        select * from readings
        union all
        select * from change_points_kept
    ) as points
    {%- if partial %}
    join bounds on bounds.meter_id = points.meter_id
        and bounds.customer_id is not distinct from points.customer_id
        and points.reading_date >= bounds.context_from
    {%- endif %}
),

neighbours as (
    select
        *,
        lag(register_kwh) over by_meter as previous_kwh,
        lead(register_kwh) over by_meter as next_kwh,
        lag(reading_date) over by_meter as previous_reading_date
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
        previous_reading_date,
        source_loaded_at,
        {{ build_stamp() }} as computed_at
        {%- if is_incremental() %},
        {{ 'rebuild_from' if partial else 'null::date' }} as _rebuild_from
        {%- endif %}
    from neighbours
    {%- if partial %}
    where reading_date >= rebuild_from
    {%- endif %}
)

select * from final
{%- if not partial %}
{{ month_clustered('reading_date') }}
{%- endif %}

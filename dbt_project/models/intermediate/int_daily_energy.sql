-- Energy per customer and day from the cumulative registers: consecutive readings of a
-- meter differenced (spike readings skipped), a register that wrapped treated as a wrap,
-- a gap's energy spread evenly over its days (flagged as estimated), and the two meters of
-- a change day added up. Never negative: a drop that is not a wrap is flagged, not used.
--
-- Incremental per customer (macros/series_rebuild.sql): the points int_meter_readings rebuilt
-- since this table last read it change the energy of their customer from the day after the
-- last point kept before them (a gap's energy reaches back to it); those days are recomputed
-- from every meter of the customer. When int_meter_readings was rebuilt whole, so is this.
{{ config(
    materialized='incremental',
    incremental_strategy='replace_from',
    rebuild_key='customer_id',
    rebuild_date='energy_date',
    on_schema_change='ignore',
    pre_hook="{{ add_column_if_missing('built_at', dbt.type_timestamp()) }}"
) }}
{% set rates = ['tip', 'peak', 'flat', 'valley'] %}
{% set points = ref('int_meter_readings') %}

{%- set partial = false -%}
{%- if is_incremental() -%}
    {%- set read_before = own_watermark('readings_computed_at') -%}
    {%- set partial = scalar_query("select count(*) from " ~ points ~ " where computed_at <= " ~ read_before, 0) > 0 -%}
{%- endif %}
{%- if partial -%}
    {#- The CTEs of an incremental build. They read the points before the rebuilt ones from
        `kept_points`: the whole table, or its days from one on (see below). -#}
    {%- set rebuild_ctes -%}
-- Per series (account and meter) with rebuilt points: its last kept point before them; the
-- customer's days from the day after the earliest such point are recomputed.
rebuilt as (
    select customer_id, meter_id, min(reading_date) as first_rebuilt_date
    from {{ points }}
    where computed_at > {{ read_before }}
    group by all
),

last_kept as (
    select kept.customer_id, kept.meter_id, max(kept.reading_date) as reading_date
    from __KEPT_POINTS__ as kept
    join rebuilt on kept.customer_id = rebuilt.customer_id and kept.meter_id = rebuilt.meter_id
        and kept.reading_date < rebuilt.first_rebuilt_date
    where not kept.is_spike
    group by all
),

rebuild as (
    select
        rebuilt.customer_id,
        min(coalesce(last_kept.reading_date + 1, rebuilt.first_rebuilt_date)) as rebuild_from
    from rebuilt left join last_kept using (customer_id, meter_id)
    group by all
),

-- Every meter of such a customer, from its last kept point before those days.
context as (
    select kept.customer_id, kept.meter_id, max(kept.reading_date) as reading_date
    from __KEPT_POINTS__ as kept
    join rebuild on kept.customer_id = rebuild.customer_id and kept.reading_date < rebuild.rebuild_from
    where not kept.is_spike
    group by all
),

readings as (
    select kept.*, rebuild.rebuild_from
    from __KEPT_POINTS__ as kept
    join rebuild using (customer_id)
    left join context using (customer_id, meter_id)
    where not kept.is_spike and kept.reading_date >= coalesce(context.reading_date, rebuild.rebuild_from)
)
    {%- endset -%}
    {%- set kept_points = points -%}
    {#- The kept points before the rebuilt ones are looked up from a day on, not in the whole
        table: at 100,000 accounts a new month rebuilds every customer, and the joins of the
        74 M points with them took most of the model's time (6-7 s alone, 3.2 s from a month
        before the first rebuilt point). That day is a guess, 31 days before the first
        rebuilt point, and is kept only when every series it needs starts after it or has a
        kept point it reads before the days it rebuilds; a longer gap reads the whole table.
        A series reads from before the day when its earliest point read has a predecessor
        (int_meter_readings' previous_reading_date) before it. -#}
    {%- set near = scalar_query(
        "select strftime(min(reading_date) - 31, '%Y-%m-%d') from " ~ points
        ~ " where computed_at > " ~ read_before) -%}
    {%- if near -%}
        {%- set near_points = "(select * from " ~ points ~ " where reading_date >= date '" ~ near ~ "')" -%}
        {%- set unresolved = scalar_query("with " ~ rebuild_ctes.replace('__KEPT_POINTS__', near_points) ~ ",
            series as (
                select customer_id, meter_id,
                    bool_or(previous_reading_date < date '" ~ near ~ "') as reads_from_before,
                    max(reading_date) as last_date
                from " ~ points ~ " join rebuild using (customer_id)
                where reading_date >= date '" ~ near ~ "'
                group by all
            )
            select count(*) from series
            join rebuild using (customer_id)
            left join rebuilt using (customer_id, meter_id)
            left join last_kept using (customer_id, meter_id)
            left join context using (customer_id, meter_id)
            where series.reads_from_before and (
                rebuilt.meter_id is not null and last_kept.reading_date is null
                or series.last_date >= rebuild.rebuild_from and context.reading_date is null
            )", 1) -%}
        {%- if unresolved == 0 -%}
            {%- set kept_points = near_points -%}
        {%- endif -%}
    {%- endif -%}
{%- endif %}

with
{% if partial -%}
{{ rebuild_ctes.replace('__KEPT_POINTS__', kept_points | string) }},
{%- else %}
readings as (
    select * from {{ points }} where not is_spike
),
{%- endif %}

steps as (
    select
        customer_id,
        meter_id,
        reading_date,
        lag(reading_date) over by_meter as previous_date,
        register_kwh - lag(register_kwh) over by_meter as register_step,
        lag(register_kwh) over by_meter as previous_kwh,
        register_kwh,
        {%- for r in rates %}
        register_{{ r }}_kwh - lag(register_{{ r }}_kwh) over by_meter as {{ r }}_step,
        {%- endfor %}
        is_from_meter_change or lag(is_from_meter_change) over by_meter as is_meter_change,
        -- The point before this one in the meter's series is not the previous one kept: the
        -- spikes between were skipped, and this step bridges them. (An EXISTS over the spikes
        -- instead was half of the model's time at 100,000 accounts.)
        coalesce(previous_reading_date <> lag(reading_date) over by_meter, false) as bridges_spike
        {%- if partial %},
        rebuild_from
        {%- endif %}
    from readings
    window by_meter as (partition by customer_id, meter_id order by reading_date)
    qualify previous_date is not null
),

-- An old register wraps at 99999.99 or 999999.99: a drop from near the top to near zero.
wrapped as (
    select
        *,
        power(10, ceil(log10(previous_kwh + 0.01))) as wrap_at
    from steps
),

measured as (
    select
        customer_id,
        meter_id,
        previous_date,
        reading_date,
        date_diff('day', previous_date, reading_date) as span_days,
        case
            when register_step >= 0 then register_step
            when previous_kwh >= 0.9 * wrap_at and register_kwh + wrap_at - previous_kwh < 0.1 * wrap_at
                then register_kwh + wrap_at - previous_kwh
        end as span_kwh,
        register_step < 0 and previous_kwh >= 0.9 * wrap_at
            and register_kwh + wrap_at - previous_kwh < 0.1 * wrap_at as is_rollover,
        {%- for r in rates %}
        -- A period register can neither fall nor outrun the total: such a step is unknown.
        case
            when {{ r }}_step >= 0 and {{ r }}_step <= coalesce(register_step, 0) + 0.011 then {{ r }}_step
        end as span_{{ r }}_kwh,
        {%- endfor %}
        is_meter_change,
        bridges_spike
        {%- if partial %},
        rebuild_from
        {%- endif %}
    from wrapped
),

-- A customer with one meter has one piece per day (a meter's spans are disjoint), so only the
-- days of customers with several meters are grouped. Grouping all 71 M days of 100,000
-- accounts, nearly one group per row, was most of the model's time: 83 s → 49 s, alone. A full
-- build counts the meters over the whole table, not its readings: reading those twice made
-- DuckDB materialise them. An incremental build counts them over its own readings, every
-- meter with a day it rebuilds: a customer counted with several meters is grouped, which
-- gives a customer with one the same days.
several_meters as (
    select customer_id from {{ 'readings' if partial else points }}
    group by customer_id having min(meter_id) <> max(meter_id)
),

spread as (
    select
        customer_id,
        meter_id,
        unnest(generate_series(previous_date + 1, reading_date, interval 1 day))::date as energy_date,
        span_days,
        span_kwh / span_days as kwh,
        {%- for r in rates %}
        span_{{ r }}_kwh / span_days as {{ r }}_kwh,
        {%- endfor %}
        span_kwh is null as is_negative_step,
        is_rollover,
        is_meter_change,
        bridges_spike,
        customer_id in (select customer_id from several_meters) as has_several_meters
        {%- if partial %},
        rebuild_from
        {%- endif %}
    from measured
),

{#- Each column of a day: (name, value from its pieces, value when it has one piece). -#}
{%- set day_columns = [('kwh', 'sum(kwh)', 'kwh')] -%}
{%- for r in rates -%}
    {#- A period energy is known only when every piece of the day has its register. -#}
    {%- do day_columns.append((r ~ '_kwh', 'case when count(' ~ r ~ '_kwh) = count(*) then sum(' ~ r ~ '_kwh) end', r ~ '_kwh')) -%}
{%- endfor -%}
{%- do day_columns.extend([
    ('is_estimated', 'bool_or(span_days > 1)', 'span_days > 1'),
    ('is_spike_adjusted', 'bool_or(bridges_spike)', 'bridges_spike'),
    ('has_negative_step', 'bool_or(is_negative_step)', 'is_negative_step'),
    ('has_rollover', 'bool_or(is_rollover)', 'is_rollover'),
    ('has_meter_change', 'bool_or(is_meter_change)', 'is_meter_change'),
    ('n_meters', 'count(*)', '1::bigint'),
]) -%}
{%- if is_incremental() -%}
    {%- do day_columns.append(('_rebuild_from', 'min(rebuild_from)' if partial else 'null::date', 'rebuild_from' if partial else 'null::date')) -%}
{%- endif %}

days as (
    {%- for grouped in [true, false] %}
    select
        customer_id,
        energy_date,
        {%- for name, of_pieces, of_one in day_columns %}
        {{ of_pieces if grouped else of_one }} as {{ name }}{{ ',' if not loop.last }}
        {%- endfor %}
    from spread
    where {{ '' if grouped else 'not ' }}has_several_meters
    {%- if partial %}
        and energy_date >= rebuild_from
    {%- endif %}
    {%- if grouped %}
    group by customer_id, energy_date
    union all
    {%- endif %}
    {%- endfor %}
),

final as (
    select
        days.*,
        -- What this table has read of int_meter_readings: its next run starts after it.
        (select max(computed_at) from {{ points }}) as readings_computed_at,
        {{ build_stamp() }} as built_at
    from days
)

select * from final
{%- if not partial %}
{{ month_clustered('energy_date') }}
{%- endif %}

-- Per customer and month: energy totals and the sufficient statistics (counts, sums, sums of
-- squares and products) that let 12-month variability, ratios and temperature slopes be
-- computed by adding months up, without revisiting the days.
--
-- Conditional sums and counts are written `sum(case when … then x end)`, not with FILTER:
-- DuckDB evaluates the ~35 filtered aggregates one by one over the 71 M days of 100,000
-- accounts, 85 s against 54 s for the same results with CASE (alone on the bench's warehouse).
--
-- Incremental per customer (macros/series_rebuild.sql), as the days it adds up: a customer's
-- months are recomputed from the month of the first day int_daily_energy rebuilt for it since
-- this table last read it; every customer's from the first month of weather loaded since;
-- and a customer's every month when the archive moved it to another district (its weather),
-- first knew it or no longer does. A new month then reads the days of the months it touches,
-- not 24 months' (100,000 accounts, in the increment's build on a slow day: 57 s whole, 15 s).
-- When int_daily_energy was rebuilt whole, so is this. A new holiday calendar (an upgrade of
-- chinese_calendar) changes old months too: `make rebuild`.
{{ config(
    materialized='incremental',
    incremental_strategy='replace_from',
    rebuild_key='customer_id',
    rebuild_date='usage_month',
    on_schema_change='ignore'
) }}
{% set daily = ref('int_daily_energy') %}
{% set weather_source = source('raw', 'ext__weather_daily') %}

{%- set partial = false -%}
{%- if is_incremental() -%}
    {%- set energy_read = own_watermark('energy_computed_at') -%}
    {%- set weather_read = own_watermark('weather_loaded_at') -%}
    {%- set partial = scalar_query("select count(*) from " ~ daily ~ " where readings_computed_at <= " ~ energy_read, 0) > 0 -%}
    {%- set weather_from = scalar_query(
        "select strftime(min(date_trunc('month', DATE)), '%Y-%m-%d') from " ~ weather_source
        ~ " where _loaded_at > " ~ weather_read) -%}
{%- endif %}
{%- if partial -%}
    {#- Per customer: the first month whose days may have changed since this table was built. -#}
    {%- set rebuild_sql -%}
    select customer_id, min(rebuild_from) as rebuild_from
    from (
        select customer_id, date_trunc('month', min(energy_date))::date as rebuild_from
        from {{ daily }}
        where readings_computed_at > {{ energy_read }}
        group by customer_id
        {%- if weather_from %}
        union all
        select customer_id, date '{{ weather_from }}' from {{ ref('dim_customer') }}
        {%- endif %}
        union all
        select customer_id, date '0001-01-01'
        from (
            (
                -- (a customer without days has no months, and nothing to rebuild). The few
                -- new pairs first, then their days: checked for every customer, the days'
                -- 75 M customer ids probed a table of 100,000: 1.2 s of CPU at 100k, against 0.45 s.
                select customer_id, district_code
                from (
                    select customer_id, district_code from {{ ref('dim_customer') }}
                    except
                    select distinct customer_id, district_code from {{ this }}
                )
                where customer_id in (select customer_id from {{ daily }})
            )
            union all
            (
                select distinct customer_id, district_code from {{ this }}
                except
                select customer_id, district_code from {{ ref('dim_customer') }}
            )
        )
    )
    group by customer_id
    {%- endset -%}
    {#- Their earliest month, as a constant: the days' scan is filtered on it before anything
        is joined (as a join condition alone, every day of the view was read and joined first).
        The customers rebuilt whole are left out of it and their days before it read apart,
        only when they have any: the archive first knows a hundred customers in a month, and
        one of them made the constant year 1, and the new month's build read all 24 months
        (100,000 accounts: 77 s). Read apart, the days before it cost a scan of 69 M days
        (2.5-4 s of CPU: DuckDB passes the join's customers to the scan only as min/max and
        bloom filters) even when, as for a customer the archive has just met, the customers'
        days all lie after it. Counting them reads two columns (0.1 s). -#}
    {%- set rebuild_after, days_before = '9999-12-31', 0 -%}
    {%- if execute -%}
        {%- set bounds = run_query(
            "with rebuild as (" ~ rebuild_sql ~ "), "
            ~ "after as (select coalesce(min(rebuild_from) filter (where rebuild_from > date '0001-01-01'), "
            ~ "date '9999-12-31') as day from rebuild), "
            ~ "whole as (select customer_id, day from rebuild join " ~ ref('dim_customer') ~ " using (customer_id), after "
            ~ "where rebuild_from = date '0001-01-01') "
            ~ "select strftime(day, '%Y-%m-%d'), (select count(*) from " ~ daily ~ " as energy join whole "
            ~ "on energy.customer_id = whole.customer_id and energy.energy_date < whole.day) from after") -%}
        {%- set rebuild_after = bounds.columns[0].values()[0] -%}
        {%- set days_before = bounds.columns[1].values()[0] -%}
    {%- endif -%}
{%- endif %}

with
customers as (
    select customer_id, district_code from {{ ref('dim_customer') }}
),

{% if partial -%}
rebuild as (
{{ rebuild_sql }}
),

-- Every customer to rebuild, also one with no day left (no longer known, or no days from
-- then on): that one's row has no month, and only marks its rows for deletion. Its district
-- is joined here, to the customers: joined to the 6 M days of a new month at 100k, it made
-- DuckDB hash the days (it misjudges how many a partial build reads; 0.4 s more CPU).
energy as (
    select *
    from rebuild
    left join customers using (customer_id)
    left join (
        select energy.*
        from {{ ref('fct_daily_energy') }} as energy
        join rebuild using (customer_id)
        where energy.energy_date >= date '{{ rebuild_after }}'
            and energy.is_known_customer and energy.energy_date >= rebuild.rebuild_from
        {%- if days_before %}
        union all
        -- The days before it of the customers rebuilt whole: a join with a few customers.
        select energy.*
        from {{ ref('fct_daily_energy') }} as energy
        join rebuild using (customer_id)
        where rebuild.rebuild_from = date '0001-01-01'
            and energy.energy_date < date '{{ rebuild_after }}' and energy.is_known_customer
        {%- endif %}
    ) using (customer_id)
),
{%- else %}
energy as (
    select energy.*, customers.district_code
    from {{ ref('fct_daily_energy') }} as energy
    left join customers using (customer_id)
    where energy.is_known_customer
),
{%- endif %}

calendar as (
    select * from {{ ref('dim_calendar') }}
),

weather as (
    select * from {{ ref('stg_ext__weather_daily') }}
),

-- The calendar and the weather of each day in each district, so that the days join them at
-- once, on a small table: joined one by one, DuckDB hashed the days for each (it misjudged
-- how many a partial build reads), 4.4 s for this query in the 100k increment against 3.4 s.
-- The districts come from the seed, every customer's district is one (dim_customer's
-- relationships test, an error, gates this model), and one of no district gets the calendar:
-- districts counted from the customers made DuckDB expect 100,000 and run out of memory.
day_context as (
    select
        calendar.calendar_date,
        districts.district_code,
        calendar.is_workday,
        calendar.is_public_holiday,
        calendar.season,
        weather.t_mean_c
    from calendar
    cross join (select district_code from {{ ref('districts') }} union all select null) as districts
    left join weather
        on weather.weather_date = calendar.calendar_date
        and weather.district_code = districts.district_code
),

days as (
    select
        energy.*,
        day_context.is_workday,
        day_context.is_public_holiday,
        day_context.season,
        day_context.t_mean_c,
        energy.tip_kwh is not null and energy.peak_kwh is not null
            and energy.flat_kwh is not null and energy.valley_kwh is not null as has_all_rates,
        greatest(day_context.t_mean_c - {{ var('cooling_base_c') }}, 0) as cdd,
        greatest({{ var('heating_base_c') }} - day_context.t_mean_c, 0) as hdd
    from energy
    -- A left join: the calendar spans the readings' years. A customer of no district still
    -- gets the calendar, and no weather.
    left join day_context
        on day_context.calendar_date = energy.energy_date
        and day_context.district_code is not distinct from energy.district_code
),

final as (
    select
        customer_id,
        energy_month as usage_month,
        district_code,
        sum(kwh) as kwh,
        count(kwh) as days_measured,
        count(case when is_estimated then 1 end) as days_estimated,
        count(case when is_spike_adjusted then 1 end) as days_spike_adjusted,
        count(case when has_negative_step then 1 end) as days_negative_step,
        sum(case when has_all_rates then tip_kwh end) as tip_kwh,
        sum(case when has_all_rates then peak_kwh end) as peak_kwh,
        sum(case when has_all_rates then flat_kwh end) as flat_kwh,
        sum(case when has_all_rates then valley_kwh end) as valley_kwh,
        sum(case when has_all_rates then kwh end) as rate_kwh,
        -- Day-level statistics on clean days only (spikes, gaps and bad steps excluded).
        count(case when is_clean then 1 end) as clean_days,
        sum(case when is_clean then kwh end) as clean_kwh,
        sum(case when is_clean then kwh * kwh end) as clean_kwh_sq,
        count(case when is_clean and is_workday then 1 end) as workdays,
        sum(case when is_clean and is_workday then kwh end) as workday_kwh,
        count(case when is_clean and not is_workday then 1 end) as restdays,
        sum(case when is_clean and not is_workday then kwh end) as restday_kwh,
        count(case when is_clean and is_public_holiday then 1 end) as holidays,
        sum(case when is_clean and is_public_holiday then kwh end) as holiday_kwh,
        count(case when is_clean and season = 'summer' then 1 end) as summer_days,
        sum(case when is_clean and season = 'summer' then kwh end) as summer_kwh,
        count(case when is_clean and season = 'winter' then 1 end) as winter_days,
        sum(case when is_clean and season = 'winter' then kwh end) as winter_kwh,
        count(case when is_clean and season = 'shoulder' then 1 end) as shoulder_days,
        sum(case when is_clean and season = 'shoulder' then kwh end) as shoulder_kwh,
        -- Cooling: warm days against cooling degrees; heating: cool days against heating degrees.
        count(case when is_clean and t_mean_c >= 19 then 1 end) as cool_n,
        sum(case when is_clean and t_mean_c >= 19 then cdd end) as cool_x,
        sum(case when is_clean and t_mean_c >= 19 then cdd * cdd end) as cool_xx,
        sum(case when is_clean and t_mean_c >= 19 then kwh end) as cool_y,
        sum(case when is_clean and t_mean_c >= 19 then cdd * kwh end) as cool_xy,
        count(case when is_clean and t_mean_c < 19 then 1 end) as heat_n,
        sum(case when is_clean and t_mean_c < 19 then hdd end) as heat_x,
        sum(case when is_clean and t_mean_c < 19 then hdd * hdd end) as heat_xx,
        sum(case when is_clean and t_mean_c < 19 then kwh end) as heat_y,
        sum(case when is_clean and t_mean_c < 19 then hdd * kwh end) as heat_xy,
        -- What this table has read: its next run starts after them.
        (select max(readings_computed_at) from {{ daily }}) as energy_computed_at,
        (select max(_loaded_at) from {{ weather_source }}) as weather_loaded_at
        {%- if is_incremental() %},
        {{ 'min(rebuild_from)' if partial else 'null::date' }} as _rebuild_from
        {%- endif %}
    from days
    group by customer_id, energy_month, district_code
)

select * from final

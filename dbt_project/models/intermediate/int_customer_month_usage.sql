-- Per customer and month: energy totals and the sufficient statistics (counts, sums, sums of
-- squares and products) that let 12-month variability, ratios and temperature slopes be
-- computed by adding months up, without revisiting the days.
--
-- Conditional sums and counts are written `sum(case when … then x end)`, not with FILTER:
-- DuckDB evaluates the ~35 filtered aggregates one by one over the 71 M days of 100,000
-- accounts, 85 s against 54 s for the same results with CASE (alone on the bench's warehouse).
with energy as (
    select * from {{ ref('fct_daily_energy') }} where is_known_customer
),

calendar as (
    select * from {{ ref('dim_calendar') }}
),

customers as (
    select customer_id, district_code from {{ ref('dim_customer') }}
),

weather as (
    select * from {{ ref('stg_ext__weather_daily') }}
),

days as (
    select
        energy.*,
        calendar.is_workday,
        calendar.is_public_holiday,
        calendar.season,
        weather.t_mean_c,
        energy.tip_kwh is not null and energy.peak_kwh is not null
            and energy.flat_kwh is not null and energy.valley_kwh is not null as has_all_rates,
        greatest(weather.t_mean_c - {{ var('cooling_base_c') }}, 0) as cdd,
        greatest({{ var('heating_base_c') }} - weather.t_mean_c, 0) as hdd
    from energy
    join calendar on calendar.calendar_date = energy.energy_date
    join customers using (customer_id)
    left join weather
        on weather.weather_date = energy.energy_date
        and weather.district_code = customers.district_code
),

final as (
    select
        customer_id,
        energy_month as usage_month,
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
        sum(case when is_clean and t_mean_c < 19 then hdd * kwh end) as heat_xy
    from days
    group by customer_id, energy_month
)

select * from final

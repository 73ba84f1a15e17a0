-- Per customer and month: energy totals and the sufficient statistics (counts, sums, sums of
-- squares and products) that let 12-month variability, ratios and temperature slopes be
-- computed by adding months up, without revisiting the days.
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
        count(*) filter (where is_estimated) as days_estimated,
        count(*) filter (where is_spike_adjusted) as days_spike_adjusted,
        count(*) filter (where has_negative_step) as days_negative_step,
        sum(tip_kwh) filter (where has_all_rates) as tip_kwh,
        sum(peak_kwh) filter (where has_all_rates) as peak_kwh,
        sum(flat_kwh) filter (where has_all_rates) as flat_kwh,
        sum(valley_kwh) filter (where has_all_rates) as valley_kwh,
        sum(kwh) filter (where has_all_rates) as rate_kwh,
        -- Day-level statistics on clean days only (spikes, gaps and bad steps excluded).
        count(*) filter (where is_clean) as clean_days,
        sum(kwh) filter (where is_clean) as clean_kwh,
        sum(kwh * kwh) filter (where is_clean) as clean_kwh_sq,
        count(*) filter (where is_clean and is_workday) as workdays,
        sum(kwh) filter (where is_clean and is_workday) as workday_kwh,
        count(*) filter (where is_clean and not is_workday) as restdays,
        sum(kwh) filter (where is_clean and not is_workday) as restday_kwh,
        count(*) filter (where is_clean and is_public_holiday) as holidays,
        sum(kwh) filter (where is_clean and is_public_holiday) as holiday_kwh,
        count(*) filter (where is_clean and season = 'summer') as summer_days,
        sum(kwh) filter (where is_clean and season = 'summer') as summer_kwh,
        count(*) filter (where is_clean and season = 'winter') as winter_days,
        sum(kwh) filter (where is_clean and season = 'winter') as winter_kwh,
        count(*) filter (where is_clean and season = 'shoulder') as shoulder_days,
        sum(kwh) filter (where is_clean and season = 'shoulder') as shoulder_kwh,
        -- Cooling: warm days against cooling degrees; heating: cool days against heating degrees.
        count(*) filter (where is_clean and t_mean_c >= 19) as cool_n,
        sum(cdd) filter (where is_clean and t_mean_c >= 19) as cool_x,
        sum(cdd * cdd) filter (where is_clean and t_mean_c >= 19) as cool_xx,
        sum(kwh) filter (where is_clean and t_mean_c >= 19) as cool_y,
        sum(cdd * kwh) filter (where is_clean and t_mean_c >= 19) as cool_xy,
        count(*) filter (where is_clean and t_mean_c < 19) as heat_n,
        sum(hdd) filter (where is_clean and t_mean_c < 19) as heat_x,
        sum(hdd * hdd) filter (where is_clean and t_mean_c < 19) as heat_xx,
        sum(kwh) filter (where is_clean and t_mean_c < 19) as heat_y,
        sum(hdd * kwh) filter (where is_clean and t_mean_c < 19) as heat_xy
    from days
    group by customer_id, energy_month
)

select * from final

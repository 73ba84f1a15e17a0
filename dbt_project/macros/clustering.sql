{#- The ORDER BY that lays a whole build of a big day-level table out month by month. An
    incremental build reads the last month or two of these tables (the days a new month
    touches, their context, the rows it replaces), and DuckDB skips a row group by the min/max
    of its dates only when its rows are a month's: built in series order, every row group held
    all 24 months, and each of those reads scanned the whole table. The month alone is the key.
    DuckDB's sort left each month's rows in about the order they came (the daily energy at
    100,000 accounts: a scan of its account ids 0.29 s, against 0.24 s sorted on month and
    account, 0.11 s in series order and 1.31 s sorted on the day, whose scattered ids compress
    badly), and it costs less than adding the account: a copy of that table took 12 s more
    sorted on the month, 22 s more on month and account. Rows an incremental build inserts
    land at the end, and they are the newest months.

    `lay_out_by_month: false` leaves the ORDER BY out: the bench's floor (bench/floor.py) is
    compiled so, since a layout computes nothing, and its CTEs kept the sorts (the floor took
    43 s longer at 100,000 accounts, as long as the sorts added to the features stage). -#}
{% macro month_clustered(date_column) -%}
{%- if var('lay_out_by_month') -%}
order by date_trunc('month', {{ date_column }})
{%- endif -%}
{%- endmacro %}

{#- The months an incremental model rebuilds, as a filter on `date_expr`, the model's date: on
    a full build every month; on an incremental one the months of the raw rows loaded since the
    model last saw its source (its newest `source_loaded_at`). A rebuilt month is recomputed
    whole from every row of that month, so a late re-extract of an old month is picked up like
    a new month. The months are looked up first and written in as constants, and the filter
    leads with a plain date range that DuckDB pushes into the raw scan, where the raw table's
    zone maps skip every other month: as `date_trunc('month', date) in (…)` alone it was
    applied above the scans, and each of the seven scans of the curves' staging view read all
    24 months (100,000 accounts, one new month: fct_daily_load_profile 53 s → 6 s alone).
    `watermark` is the model's column holding its rows' raw `_loaded_at`. -#}
{% macro months_to_rebuild(raw_table, date_column, date_expr, watermark='source_loaded_at') -%}
    {%- if is_incremental() -%}
        {%- set query -%}
            select distinct strftime(date_trunc('month', {{ date_column }}), '%Y-%m-%d')
            from {{ source('raw', raw_table) }}
            where _loaded_at > {{ own_watermark(watermark) }}
            order by 1
        {%- endset -%}
        {%- set months = run_query(query).columns[0].values() if execute else [] -%}
        {%- if months | length == 0 -%}
            false
        {%- else -%}
            ({{ date_expr }} >= date '{{ months[0] }}'
            and {{ date_expr }} < date '{{ months[-1] }}' + interval 1 month
            and date_trunc('month', {{ date_expr }})::date in ({% for m in months %}date '{{ m }}'{% if not loop.last %}, {% endif %}{% endfor %}))
        {%- endif -%}
    {%- else -%}
        true
    {%- endif -%}
{%- endmacro %}


{#- The 96 points of the curves in `relation` (staging's columns), one row per meter and
    collected 15-minute interval. Unnested by position: UNPIVOT named each point by text, and
    parsing that name back into a number cost more than the rest of the hourly load. A macro,
    the place to dispatch per adapter (docs/scaling.md). -#}
{% macro curve_points(relation) -%}
    select
        customer_id,
        meter_id,
        reading_date,
        point_number::integer as point_number,
        reading_date + (point_number - 1) * interval 15 minute as interval_start_at,
        kw,
        loaded_at
    from (
        select
            customer_id,
            meter_id,
            reading_date,
            loaded_at,
            unnest(range(1, 97)) as point_number,
            unnest([{% for i in range(1, 97) %}p{{ i }}_kw{% if not loop.last %}, {% endif %}{% endfor %}]) as kw
        from {{ relation }}
    )
    where kw is not null
{%- endmacro %}


{#- One 64-bit hash of the values of `columns` (SQL expressions), nulls and order included:
    what an incremental model keeps per row to find, on its next build, the rows whose inputs
    changed. A macro, the place to dispatch per adapter (docs/scaling.md). -#}
{% macro row_hash(columns) -%}
    hash({{ columns | join(', ') }})
{%- endmacro %}

{#- A pre-hook that gives a table built before `column` existed that column, empty in its rows:
    for an incremental model whose SELECT carries a column the table does not keep
    (`_rebuild_from`), so that dbt cannot append new columns itself (`on_schema_change`). -#}
{% macro add_column_if_missing(column, data_type) -%}
    {%- if execute and is_incremental() -%}
        {#- The table as the database has it: `this` does not say it is a table. -#}
        {%- set table = adapter.get_relation(this.database, this.schema, this.identifier) -%}
        {%- set present = adapter.get_columns_in_relation(table) | map(attribute='name') | list -%}
        {%- if column not in present -%}
            {%- do alter_relation_add_remove_columns(table, [api.Column.create(column, data_type)]) -%}
        {%- endif -%}
    {%- endif -%}
{%- endmacro %}

{#- The stamp of the rows this dbt run writes: when the run started (UTC). One value for every
    row of one build, rising from build to build, so a test can read only what the last build
    wrote (`stamp` of unique_combination and expression_holds). -#}
{% macro build_stamp() -%}
cast('{{ run_started_at.strftime("%Y-%m-%d %H:%M:%S.%f") }}' as {{ dbt.type_timestamp() }})
{%- endmacro %}

{#- Keep one row per business key of a raw table (the key comes from its data contract, via
    the generated macro business_key): the latest extract wins (file names sort by extraction date,
    then re-extract number), and within one file the last row.

    Only a few keys are ever extracted twice, so only their rows go through the window, which
    names the rows they supersede; every row but those is kept, by an anti-join on the raw
    row's name (`_source_file`, `_row_number`: the ledger loads a path once, so it names one
    row). Sorting every row instead took 42 s against 27 s for the 71 M daily readings of
    100,000 accounts. Keys compare with `is not distinct from`, so a null key is one key, as in
    the window's partition.

    One scan of the raw table, not a union of the keys extracted once and the winners of the
    others: DuckDB read every column of both sides of a union, also for a reader that needs
    three (fct_orphan_records' curves: 2.3 s → 0.6 s for 6.7 M curves of 96 points; the daily
    readings as fast as before, 7-8 s).

    `where`, a condition on key columns only (so that a key's rows are all kept or all left
    out), filters the raw rows before the keys are counted. A filter on the view's output does
    not reach that count: DuckDB grouped every raw row to find the repeated keys, also for an
    incremental build reading the last weeks (74 M daily readings: 19 s, 1 s with `where`). -#}
{% macro latest_per_key(table_name, key=none, where=none) -%}
    {%- set key = key or business_key(table_name) -%}
    {%- set relation = source('raw', table_name) -%}
    {%- set only = 'where ' ~ where if where else '' -%}
    select extracted.*
    from {{ relation }} as extracted
    anti join (
        select _source_file, _row_number
        from (
            select {{ key | join(', ') }}, _source_file, _row_number
            from {{ relation }} as extracted
            semi join (
                select {{ key | join(', ') }}
                from {{ relation }}
                {{ only }}
                group by all
                having count(*) > 1
            ) as repeated on {{ same_key('extracted', 'repeated', key) }}
            {{ only }}
        )
        qualify row_number() over (
            partition by {{ key | join(', ') }}
            order by _source_file desc, _row_number desc
        ) > 1
    ) as superseded
        on extracted._source_file = superseded._source_file
        and extracted._row_number = superseded._row_number
    {{ only }}
{%- endmacro %}


{#- Local Asia/Shanghai wall-clock time from an ISO-8601 text with `Z` or `+08:00`. -#}
{% macro to_shanghai(column) -%}
    timezone('Asia/Shanghai', cast({{ column }} as timestamptz))
{%- endmacro %}

{#- YYYYMM text → the first day of that month. -#}
{% macro month_start(ym) -%}
    make_date(cast(left({{ ym }}, 4) as integer), cast(right({{ ym }}, 2) as integer), 1)
{%- endmacro %}

{#- YYYYMMDD text, `00000000` or empty → date or null. -#}
{% macro yyyymmdd(column) -%}
    case when {{ column }} is null or {{ column }} in ('', '00000000') then null
         else try_strptime({{ column }}, '%Y%m%d')::date end
{%- endmacro %}

{#- The label of a code from the contracts' code tables (stg_contracts__code_values), null for
    a code they do not list. The column's codes become one map, looked up per row: a subquery
    per row, joined for each label, took 2.8 s of the archive snapshots' 2.26 M rows (100,000
    accounts, five labels) against 1.3 s, and 1.1 s without labels. -#}
{% macro code_label(extract, column, expr, lang='en') -%}
    (select map(list(code), list(label)) from {{ code_table(extract, column, lang) }})[{{ expr }}]
{%- endmacro %}


{#- A column's code table (`code`, `label`), as a relation: for a join, where a model compares
    labels row by row (a map looked up in a filter is planned as a nested loop). -#}
{% macro code_table(extract, column, lang='en') -%}
    (select code, label_{{ lang }} as label from {{ ref('stg_contracts__code_values') }}
     where extract = '{{ extract }}' and column_name = '{{ column }}')
{%- endmacro %}

{#- Rows whose value lies outside [min_value, max_value] (either bound optional). -#}
{% test in_range(model, column_name, min_value=none, max_value=none) %}
select {{ column_name }} as value
from {{ model }}
where {{ column_name }} is not null
  and (
    false
    {%- if min_value is not none %} or {{ column_name }} < {{ min_value }}{% endif %}
    {%- if max_value is not none %} or {{ column_name }} > {{ max_value }}{% endif %}
  )
{% endtest %}

{#- Rows where an expression that must hold is false. With `stamp` (see unique_combination),
    only the rows of the newest stamp: a row-wise check of a row holds until the row is
    rewritten, and a full build stamps every row alike, so all are read after one. -#}
{% test expression_holds(model, expression, stamp=none) %}
select * from {{ model }}
where not ({{ expression }})
{%- if stamp is not none %}
    and {{ stamp }} = (select max({{ stamp }}) from {{ model }})
{%- endif %}
{% endtest %}

{#- Rows whose combination of columns is not unique. With `stamp`, a column each build of an
    incremental model sets to one value for every row it writes, rising from build to build:
    after an incremental build only the combinations among the newest stamp's rows are counted
    (over the whole table), since a duplicate always involves a row that some build wrote and
    earlier builds' rows were counted when they were written. After a full build, where every
    row has the same stamp, all are counted. At 100,000 accounts the daily energy's 72 M rows
    took 8 s to count whole, on the path of every later model. -#}
{% test unique_combination(model, columns, stamp=none) %}
{%- set key = columns | join(', ') %}
{%- if stamp is none %}
select {{ key }}, count(*) as n
from {{ model }}
group by {{ key }}
having count(*) > 1
{%- else %}
with stamps as (
    select min({{ stamp }}) as first_stamp, max({{ stamp }}) as last_stamp from {{ model }}
),

written as (
    select distinct {{ key }} from {{ model }}
    where {{ stamp }} = (select last_stamp from stamps)
        and (select first_stamp < last_stamp from stamps)
)

select {{ key }}, count(*) as n
from {{ model }}
where (select first_stamp = last_stamp from stamps)
group by {{ key }}
having count(*) > 1

union all

select {{ key }}, count(*) as n
from {{ model }}
semi join written using ({{ key }})
group by {{ key }}
having count(*) > 1
{%- endif %}
{% endtest %}

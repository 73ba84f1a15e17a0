{#- An aggregate over a customer's last `months` months up to the row's month (the rows are
    one per customer and month, ordered by month_index). As a window function; or, given
    `span`, as a plain aggregate over a row's `span` months joined to it (its month index
    `target_index`), the months before the last `months` filtered out. -#}
{% macro trailing(aggregate, months, span=none) -%}
    {%- if span is none -%}
    {{ aggregate }} over (
        partition by customer_id order by month_index
        range between {{ months - 1 }} preceding and current row
    )
    {%- elif months == span -%}
    {{ aggregate }}
    {%- elif ' filter ' in aggregate -%}
        {{ exceptions.raise_compiler_error("trailing: " ~ aggregate ~ " has a filter of its own; it spans only " ~ months ~ " of " ~ span ~ " months") }}
    {%- else -%}
    {{ aggregate }} filter (where month_index > target_index - {{ months }})
    {%- endif -%}
{%- endmacro %}

{#- a / b, null when b is null or zero. -#}
{% macro safe_ratio(a, b) -%}
    ({{ a }}) / nullif({{ b }}, 0)
{%- endmacro %}

{#- Least-squares slope from sufficient statistics (n, Σx, Σxx, Σy, Σxy); null when fewer
    than `min_n` points or no spread in x. -#}
{% macro slope_from_sums(n, x, xx, y, xy, min_n=10) -%}
    case when {{ n }} >= {{ min_n }}
              and abs({{ n }} * {{ xx }} - {{ x }} * {{ x }}) > 1e-9
         then ({{ n }} * {{ xy }} - {{ x }} * {{ y }}) / ({{ n }} * {{ xx }} - {{ x }} * {{ x }})
    end
{%- endmacro %}

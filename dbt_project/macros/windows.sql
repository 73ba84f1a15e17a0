{#- An aggregate over a customer's last `months` months up to the row's month (the rows are
    one per customer and month, ordered by month_index). -#}
{% macro trailing(aggregate, months=12) -%}
    {{ aggregate }} over (
        partition by customer_id order by month_index
        range between {{ months - 1 }} preceding and current row
    )
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

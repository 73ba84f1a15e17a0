{#- A key given in a model's config as one column or a list of them, as a list. -#}
{% macro key_columns(key) -%}
    {{- return([key] if key is string else key) -}}
{%- endmacro %}


{#- Rows of `left` and `right` with the same `keys` (a list of columns). Compared with `is not
    distinct from`, so a null key is one key, as in a GROUP BY; DuckDB hashes the join all the
    same. -#}
{% macro same_key(left, right, keys) -%}
    {% for k in keys %}{{ 'and ' if not loop.first }}{{ left }}.{{ k }} is not distinct from {{ right }}.{{ k }}{{ ' ' if not loop.last }}{% endfor %}
{%- endmacro %}

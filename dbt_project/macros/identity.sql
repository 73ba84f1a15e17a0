{#- CONS_NO as the systems type it (`HB` prefix, spaces, leading zeros dropped) → the
    10-digit account number; anything that cannot be one becomes null (and is flagged by
    the caller), never a guess that could join the wrong customer. -#}
{% macro normalise_cons_no(column) -%}
    {%- set stripped = "regexp_replace(upper(" ~ column ~ "), '^\\s*HB|[\\s\\x{3000}-]', '', 'g')" -%}
    case when regexp_full_match({{ stripped }}, '[0-9]{1,10}') then lpad({{ stripped }}, 10, '0') end
{%- endmacro %}

{#- Schemas named exactly as configured (staging, intermediate, marts), no target prefix:
    analysts and the ML assets find `marts.customer_features` whatever the target. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}{{ target.schema }}{%- else -%}{{ custom_schema_name | trim }}{%- endif -%}
{%- endmacro %}

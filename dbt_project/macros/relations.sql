{#- Relations named without their database (catalog). DuckDB names the catalog after the file,
    so a view that named it would break once the warehouse file is copied or renamed (the
    analyst snapshot, a test's copy); unqualified names resolve in the view's own catalog. -#}
{% macro ref() -%}
    {{ return(without_database(builtins.ref(*varargs, **kwargs))) }}
{%- endmacro %}

{% macro source() -%}
    {{ return(without_database(builtins.source(*varargs, **kwargs))) }}
{%- endmacro %}

{% macro without_database(relation) -%}
    {{ return(relation.include(database=false) if relation.include is defined else relation) }}
{%- endmacro %}

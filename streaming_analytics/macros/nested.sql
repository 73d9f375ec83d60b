{#- The same SQL over nested columns on both warehouses: Postgres holds them as jsonb,
    DuckDB reads the lake's struct and list columns. -#}

{#- The events, from where this target keeps them. -#}
{% macro events_source() -%}
  {%- if target.type == 'duckdb' -%} {{ source('lake', 'customer_events') }}
  {%- else -%} {{ source('warehouse', 'customer_events') }} {%- endif -%}
{%- endmacro %}

{#- A field of a struct (object) column, as `type`. -#}
{% macro field(column, name, type='text') -%}
  {{ return(adapter.dispatch('field')(column, name, type)) }}
{%- endmacro %}

{% macro postgres__field(column, name, type) -%}
  cast({{ column }} ->> '{{ name }}' as {{ type }})
{%- endmacro %}

{% macro duckdb__field(column, name, type) -%}
  {%- set duckdb_type = {'text': 'varchar', 'double precision': 'double'}.get(type, type) -%}
  cast({{ column }}['{{ name }}'] as {{ duckdb_type }})
{%- endmacro %}

{#- FROM-clause item: one row per element of a list column, the element as `alias`. -#}
{% macro unnest_list(column, alias) -%}
  {{ return(adapter.dispatch('unnest_list')(column, alias)) }}
{%- endmacro %}

{% macro postgres__unnest_list(column, alias) -%}
  jsonb_array_elements({{ column }}) as {{ alias }}_list({{ alias }})
{%- endmacro %}

{% macro duckdb__unnest_list(column, alias) -%}
  unnest({{ column }}) as {{ alias }}_list({{ alias }})
{%- endmacro %}

{#- The UTC calendar day of a timestamp with time zone. -#}
{% macro utc_date(column) -%}
  {{ return(adapter.dispatch('utc_date')(column)) }}
{%- endmacro %}

{% macro postgres__utc_date(column) -%}
  cast(({{ column }} at time zone 'UTC') as date)
{%- endmacro %}

{% macro duckdb__utc_date(column) -%}
  cast(timezone('UTC', {{ column }}) as date)
{%- endmacro %}

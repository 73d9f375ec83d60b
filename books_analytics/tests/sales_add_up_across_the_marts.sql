-- The sales total is the same in the source, the fact table and each dimension.
with totals as (
    select
        (select sum(sales_millions) from {{ source('lake', 'books') }}) as source_total,
        (select sum(sales_millions) from {{ ref('fact_books') }}) as fact_total,
        (select sum(sales_millions) from {{ ref('dim_author') }}) as author_total,
        (select sum(sales_millions) from {{ ref('dim_language') }}) as language_total
)
select * from totals
where source_total is distinct from fact_total
   or source_total is distinct from author_total
   or source_total is distinct from language_total

-- One row per original language.
select
    md5(original_language) as language_key,
    original_language as language_name,
    count(*) as books,
    sum(sales_millions) as sales_millions
from {{ ref('stg_books') }}
group by original_language

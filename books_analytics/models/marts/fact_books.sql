-- One row per book, keyed to its author credit and its original language.
select
    md5(b.book_title) as book_key,
    b.book_title,
    a.author_key,
    l.language_key,
    b.first_published_year,
    (b.first_published_year / 10) * 10 as decade,
    b.genre,
    b.sales_millions,
    b.loaded_at
from {{ ref('stg_books') }} b
join {{ ref('dim_author') }} a on a.author_name = b.author_credit
join {{ ref('dim_language') }} l on l.language_name = b.original_language

-- The loaded silver rows with warehouse names; lineage columns stay in the lake.
select
    book_title,
    authors as author_credit,
    original_language,
    first_published_year,
    sales_millions,
    genre,
    _loaded_at as loaded_at
from {{ source('lake', 'books') }}

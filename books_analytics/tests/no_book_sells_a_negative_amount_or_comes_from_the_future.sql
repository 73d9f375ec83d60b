select book_title, sales_millions, first_published_year
from {{ ref('fact_books') }}
where sales_millions < 0
   or first_published_year > extract(year from current_date)

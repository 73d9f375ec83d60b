-- Every loaded book is in the fact table exactly once: no book lost to a join.
select s.book_title
from {{ source('lake', 'books') }} s
left join {{ ref('fact_books') }} f on f.book_title = s.book_title
group by s.book_title
having count(f.book_key) <> 1

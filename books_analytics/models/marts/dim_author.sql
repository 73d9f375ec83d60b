-- One row per author credit as printed on the book ("Arlene Eisenberg and Heidi Murkoff" is
-- one credit). Sales figures belong to a book, not to each person on it: splitting credits
-- into people would either double-count sales or need invented shares. is_joint_credit marks
-- the credits that name more than one person, for whoever wants to go further.
select
    md5(author_credit) as author_key,
    author_credit as author_name,
    (author_credit like '% and %' or author_credit like '%;%') as is_joint_credit,
    count(*) as books,
    sum(sales_millions) as sales_millions
from {{ ref('stg_books') }}
group by author_credit

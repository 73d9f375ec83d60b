-- Every play is counted once per genre and day: the daily totals equal the fact table.
select 1
from (select count(*) as n from {{ ref('fact_plays') }}) as f
cross join (select sum(plays) as n from {{ ref('agg_genre_daily') }}) as a
where f.n <> a.n

-- How often each title was recommended, and its average score.
select
    media_id,
    min(title) as title,
    count(*) as times_recommended,
    avg(score) as avg_score
from {{ ref('stg_recommendations') }}
group by media_id

-- One row per title played or browsed.
select
    media_id,
    min(title) as title,
    min(content_type) as content_type,
    min(genre) as genre,
    min(provider) as provider,
    sum(case when event_type = 'content_play' then 1 else 0 end) as plays
from {{ ref('stg_customer_events') }}
where media_id is not null
group by media_id

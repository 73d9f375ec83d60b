-- Plays, viewers and time played per genre and UTC day.
select
    p.event_date,
    c.genre,
    count(*) as plays,
    count(distinct p.user_id) as viewers,
    sum(p.duration_seconds) as seconds_played
from {{ ref('fact_plays') }} as p
join {{ ref('dim_content') }} as c on c.media_id = p.media_id
group by p.event_date, c.genre

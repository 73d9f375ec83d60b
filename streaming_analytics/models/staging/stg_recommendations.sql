-- One row per title recommended in an event (the list column unnested).
select
    e.event_id,
    e.user_id,
    {{ field('rec', 'media_id') }} as media_id,
    {{ field('rec', 'title') }} as title,
    {{ field('rec', 'score', 'double precision') }} as score
from {{ events_source() }} as e
cross join {{ unnest_list('e.recommendations', 'rec') }}

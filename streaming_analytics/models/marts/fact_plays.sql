-- One row per play.
select
    event_id,
    user_id,
    media_id,
    event_ts,
    event_date,
    duration_seconds,
    quality,
    device_type,
    country
from {{ ref('stg_customer_events') }}
where event_type = 'content_play'

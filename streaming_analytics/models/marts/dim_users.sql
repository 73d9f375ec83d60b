-- One row per user: where they watch from, their plan and device, when they were seen.
select
    user_id,
    min(country) as country,
    min(plan) as plan,
    min(device_type) as device_type,
    min(event_ts) as first_seen,
    max(event_ts) as last_seen,
    count(*) as events
from {{ ref('stg_customer_events') }}
group by user_id

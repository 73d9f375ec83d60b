"""The user-activity windows of pipelines/user_activity.toml, computed independently of
lakectl from what the generator wrote (its NDJSON file and truth file).

    python3 user_activity.py EVENTS.ndjson TRUTH.ndjson PARTITIONS [MAX_SESSION_MINUTES]

Prints one JSON object: the late records as [partition, offset, event type], the final watermark, and
the rows of each window table (times in microseconds since the epoch).

The definitions, as the README states them:
- Kafka partition of a record: murmur2(key) % PARTITIONS (Java client), key = user_id;
  its offset: its position among all records sent to that partition.
- Silver keeps each clean or late record once: corrupt records and re-sent duplicates never
  reach the windows.
- Watermark of a partition: 2 minutes behind the largest event time it has shown before the
  record; a record older than that is late.
- Final watermark: the slowest partition's (every partition has shown records). A window or session is final when its end is at
  or before it.
- page_view_counts: page views per page and 1-minute window [start, start + 1m), final ones.
- active_users: every 5-minute window sliding by 1 minute, distinct users and events, open
  ones too (update mode).
- user_sessions: per user, a new session when 30 minutes or more pass without an event, or
  MAX_SESSION_MINUTES (default 240) or more after the session's first event; it ends 30
  minutes after its last event or MAX_SESSION_MINUTES after its first, whichever is first; final ones, with events, distinct pages,
  duration.
- enriched_activity: each event of a final session with the session's start, its position
  (by event time, then event id) and the session's event count.
"""
import json
import sys
from collections import defaultdict
from datetime import datetime, timedelta

MINUTE = 60_000_000
DELAY = 2 * MINUTE
GAP = 30 * MINUTE
MAX_SESSION = int(sys.argv[4] if len(sys.argv) > 4 else 240) * MINUTE


def murmur2(data: bytes) -> int:
    m, r = 0x5BD1E995, 24
    length = len(data)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    for i in range(length // 4):
        k = int.from_bytes(data[i * 4 : i * 4 + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    tail = length & ~3
    rest = length % 4
    if rest == 3:
        h ^= data[tail + 2] << 16
    if rest >= 2:
        h ^= data[tail + 1] << 8
    if rest >= 1:
        h ^= data[tail]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


EPOCH = datetime.fromisoformat("1970-01-01T00:00:00+00:00")


def micros(text: str) -> int:
    return (datetime.fromisoformat(text.replace("Z", "+00:00")) - EPOCH) // timedelta(microseconds=1)


def main():
    events_path, truth_path, partitions = sys.argv[1], sys.argv[2], int(sys.argv[3])
    # Records silver keeps out, with their Kafka key (a corrupt record may lack user_id).
    skipped = {}
    for line in open(truth_path):
        t = json.loads(line)
        if t["defect"] in ("corrupt", "duplicate"):
            skipped[t["seq"]] = t["key"]
    offsets = defaultdict(int)
    max_seen = {}
    late, on_time = [], []
    for seq, line in enumerate(open(events_path)):
        event = json.loads(line)
        key = skipped.get(seq, event.get("user_id"))
        p = (murmur2(key.encode()) & 0x7FFFFFFF) % partitions
        if seq in skipped:
            offsets[p] += 1
            continue
        offset = offsets[p]
        offsets[p] += 1
        t = micros(event["event_time"])
        if p in max_seen and t < max_seen[p] - DELAY:
            late.append([p, offset, event["event_type"]])
        else:
            on_time.append((t, event))
        max_seen[p] = max(max_seen.get(p, t), t)
    watermark = min(max_seen.values()) - DELAY

    views = defaultdict(int)
    active = defaultdict(lambda: [set(), 0])
    by_user = defaultdict(list)
    for t, e in on_time:
        if e["event_type"] == "page_view":
            views[(t // MINUTE * MINUTE, e["page"])] += 1
        latest = t // MINUTE * MINUTE
        for start in range(latest, t - 5 * MINUTE, -MINUTE):
            active[start][0].add(e["user_id"])
            active[start][1] += 1
        by_user[e["user_id"]].append((t, e["event_id"], e["page"]))

    sessions, enriched = [], []
    for user, events in by_user.items():
        events.sort()
        current = []
        for t, event_id, page in events + [(None, None, None)]:
            if current and (t is None or t - current[-1][0] >= GAP
                            or t - current[0][0] >= MAX_SESSION):
                first, last = current[0][0], current[-1][0]
                end = min(last + GAP, first + MAX_SESSION)
                if end <= watermark:
                    pages = len({p for _, _, p in current})
                    sessions.append([user, first, end, len(current), pages, last - first])
                    for position, (_, eid, _) in enumerate(current, 1):
                        enriched.append([eid, user, first, position, len(current)])
                current = []
            if t is not None:
                current.append((t, event_id, page))

    print(json.dumps({
        "late": sorted(late),
        "watermark": watermark,
        "page_view_counts": sorted(
            [s, s + MINUTE, page, n] for (s, page), n in views.items() if s + MINUTE <= watermark
        ),
        "active_users": sorted([s, s + 5 * MINUTE, len(u), n] for s, (u, n) in active.items()),
        "user_sessions": sorted(sessions),
        "enriched_activity": sorted(enriched),
    }))


if __name__ == "__main__":
    main()

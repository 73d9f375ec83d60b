"""The user-activity windows of pipelines/user_activity.toml, computed independently of
lakectl from what the generator wrote (its NDJSON file and truth file).

    python3 user_activity.py EVENTS.ndjson TRUTH.ndjson PARTITIONS [MAX_SESSION_MINUTES]

Prints one JSON object: the late records of each window table as [partition, offset], the final
watermark, and the rows of each window table (times in microseconds since the epoch).

The definitions, as docs/window.md states them:
- Kafka partition of a record: murmur2(key) % PARTITIONS (Java client), key = user_id;
  its offset: its position among all records sent to that partition.
- Silver keeps each clean or late record once: corrupt records and re-sent duplicates never
  reach the windows.
- Watermark of a partition: 2 minutes behind the largest event time it has shown before the
  record. A record counts in each of its windows that is not final by its partition's
  watermark when it arrives (a window is final when its end is at or before it), and is late
  — quarantined — for a window table when every window of that table it belongs to was final.
  Sessions: a record first closes its user's sessions final by that watermark (they are
  emitted and no later record of the user joins them), then is late when the session it joins
  or starts among the user's open ones ends by it.
- Final watermark: the slowest partition's (every partition has shown records). A window or
  session is final when its end is at or before it; sessions a record closed are final too.
- page_view_counts: page views per page and 1-minute window [start, start + 1m), final ones.
- active_users: every 5-minute window sliding by 1 minute, distinct users and events, open
  ones too (update mode); a record counts in those of its five windows not final when it
  arrived.
- user_sessions: per user, a new session when 30 minutes or more pass without an event, or
  MAX_SESSION_MINUTES (default 240) or more after the session's first event; it ends 30
  minutes after its last event or MAX_SESSION_MINUTES after its first, whichever is first;
  final ones, with events, distinct pages, duration.
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


def sessions_of(events):
    """The sessions of one user's events (time, event id, page), sorted: lists of events."""
    out = []
    for e in sorted(events):
        current = out[-1] if out else None
        if current and e[0] - current[-1][0] < GAP and e[0] - current[0][0] < MAX_SESSION:
            current.append(e)
        else:
            out.append([e])
    return out


def end_of(session):
    return min(session[-1][0] + GAP, session[0][0] + MAX_SESSION)


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
    late = {"page_view_counts": [], "active_users": [], "user_sessions": []}
    views = defaultdict(int)
    active = defaultdict(lambda: [set(), 0])
    open_events = defaultdict(list)  # a user's events of sessions not closed yet
    closed = []  # (user, session events) closed by a record of the user
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
        w = max_seen[p] - DELAY if p in max_seen else None
        final = lambda end: w is not None and end <= w
        minute = t // MINUTE * MINUTE
        if event["event_type"] == "page_view":
            if final(minute + MINUTE):
                late["page_view_counts"].append([p, offset])
            else:
                views[(minute, event["page"])] += 1
        # Five windows [s, s + 5m), s = minute, minute - 1m, …: the latest ends last.
        if final(minute + 5 * MINUTE):
            late["active_users"].append([p, offset])
        for start in range(minute, t - 5 * MINUTE, -MINUTE):
            if not final(start + 5 * MINUTE):
                active[start][0].add(event["user_id"])
                active[start][1] += 1
        user = event["user_id"]
        mine = (t, event["event_id"], event["page"])
        if w is not None:
            sessions = sessions_of(open_events[user])
            while sessions and end_of(sessions[0]) <= w:
                closed.append((user, sessions.pop(0)))
            open_events[user] = [e for s in sessions for e in s]
        joined = next(s for s in sessions_of(open_events[user] + [mine]) if mine in s)
        if final(end_of(joined)):
            late["user_sessions"].append([p, offset])
        else:
            open_events[user].append(mine)
        max_seen[p] = max(max_seen.get(p, t), t)
    watermark = min(max_seen.values()) - DELAY

    for user, events in open_events.items():
        for session in sessions_of(events):
            if end_of(session) <= watermark:
                closed.append((user, session))
    sessions, enriched = [], []
    for user, session in closed:
        first, last = session[0][0], session[-1][0]
        pages = len({page for _, _, page in session})
        sessions.append([user, first, end_of(session), len(session), pages, last - first])
        for position, (_, eid, _) in enumerate(sorted(session), 1):
            enriched.append([eid, user, first, position, len(session)])

    print(json.dumps({
        "late": {table: sorted(rows) for table, rows in late.items()},
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

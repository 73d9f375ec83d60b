//! `user-activity`: visits to a website. A visit is a burst of events by one user (mean 8,
//! about 20 s apart), reached from an outside referrer or none, then navigating inside the
//! site (each event's referrer is the page before). Users and pages are Zipf-popular.
//!
//! ```json
//! {"event_id":"…","user_id":"u012345","session_id":"…","event_type":"page_view",
//!  "page":"/products/p0042","referrer":"google.com","device":"mobile",
//!  "event_time":"2026-01-01T00:00:01.234Z"}
//! ```
//! Key: `user_id`. Corruptions: `missing_field` (no `user_id`), `wrong_type` (`event_time`
//! as epoch milliseconds, a number).

use super::json::Json;
use super::random::{Rand, Zipf};
use super::{Burst, Event, Profile, Slots, Users};

const USERS: usize = 50_000;
const VISIT: Burst = Burst {
    events: 8.0,
    gap_s: 20.0,
    pause_s: 60.0,
};

const EVENT_TYPES: &[(&str, f64)] = &[
    ("page_view", 0.62),
    ("click", 0.2),
    ("scroll", 0.08),
    ("search", 0.04),
    ("add_to_cart", 0.04),
    ("login", 0.01),
    ("logout", 0.01),
];
const DEVICES: &[(&str, f64)] = &[("desktop", 0.48), ("mobile", 0.44), ("tablet", 0.08)];
/// Where a visit comes from; `None` is a direct visit.
const REFERRERS: &[(Option<&str>, f64)] = &[
    (None, 0.35),
    (Some("google.com"), 0.3),
    (Some("bing.com"), 0.05),
    (Some("duckduckgo.com"), 0.03),
    (Some("facebook.com"), 0.08),
    (Some("t.co"), 0.04),
    (Some("newsletter"), 0.08),
    (Some("partner-blog.example"), 0.07),
];
const SECTIONS: &[&str] = &[
    "/",
    "/products",
    "/search",
    "/cart",
    "/checkout",
    "/account",
    "/help",
    "/about",
    "/blog",
    "/deals",
    "/contact",
    "/login",
];

struct Visit {
    user: String,
    session_id: String,
    device: &'static str,
    left: u32,
    /// The page of the last event, the referrer of the next; the outside referrer first.
    previous: Option<String>,
}

pub struct UserActivity {
    slots: Slots<Visit>,
    users: Users,
    pages: Zipf,
    page_names: Vec<String>,
}

impl UserActivity {
    pub fn new(seed: u64, start_ms: i64, event_rate: f64) -> UserActivity {
        let users = Users::new(USERS);
        let pages = Zipf::new(400, 1.0);
        let page_names = SECTIONS
            .iter()
            .map(|s| s.to_string())
            .chain((0..388).map(|i| {
                if i % 4 == 3 {
                    format!("/blog/post-{}", i / 4)
                } else {
                    format!("/products/p{i:04}")
                }
            }))
            .collect();
        let slots = Slots::new(seed, start_ms, event_rate, &VISIT, |rng| {
            new_visit(rng, &users)
        });
        UserActivity {
            slots,
            users,
            pages,
            page_names,
        }
    }
}

fn new_visit(rng: &mut Rand, users: &Users) -> Visit {
    let mut session_id = String::new();
    rng.uuid(&mut session_id);
    Visit {
        user: users.draw(rng).1,
        session_id,
        device: rng.weighted(DEVICES),
        left: rng.count_with_mean(VISIT.events),
        previous: rng.weighted(REFERRERS).map(str::to_string),
    }
}

impl Profile for UserActivity {
    fn corruptions(&self) -> &'static [&'static str] {
        &["missing_field", "wrong_type"]
    }

    fn next(
        &mut self,
        rng: &mut Rand,
        delay_ms: i64,
        corruption: Option<&'static str>,
        event: &mut Event,
    ) {
        let slot = self.slots.next_event(rng, delay_ms, event);
        let page = &self.page_names[self.pages.sample(rng)];
        let event_type = rng.weighted(EVENT_TYPES);
        let visit = self.slots.actor(slot);
        event.key.clone_from(&visit.user);
        event.value.clear();
        let mut o = Json::object(&mut event.value);
        o.str("event_id", &event.event_id);
        if corruption != Some("missing_field") {
            o.str("user_id", &visit.user);
        }
        o.str("session_id", &visit.session_id)
            .str("event_type", event_type)
            .str("page", page)
            .opt_str("referrer", visit.previous.as_deref())
            .str("device", visit.device);
        if corruption == Some("wrong_type") {
            o.int("event_time", event.event_ms);
        } else {
            o.time("event_time", event.event_ms);
        }
        o.end();
        visit.previous = Some(page.clone());
        visit.left -= 1;
        if visit.left == 0 {
            let next = new_visit(rng, &self.users);
            self.slots.replace(slot, rng, VISIT.pause_s, next);
        } else {
            self.slots.again(slot, rng, VISIT.gap_s);
        }
    }
}

//! `customer-events`: a streaming app's events, nested. A viewing session (mean 5 events,
//! about 45 s apart) browses, searches and plays Zipf-popular titles. A user's device,
//! location and subscription are fixed per user; a title's type, genre, provider, season and
//! episode are fixed per title.
//!
//! ```json
//! {"event_id":"…","user_id":"u000042","event_type":"content_play",
//!  "timestamp":"2026-01-01T00:00:01.234Z",
//!  "device":{"type":"mobile","os":"Android","os_version":"14","app_version":"5.3.1","model":"Pixel 8"},
//!  "location":{"country":"BR","city":"São Paulo","region":"SP","timezone":"America/Sao_Paulo"},
//!  "content":{"media_id":"m00042","title":"The Silent River","type":"series","episode":3,
//!             "season":1,"provider":"Northwind Studios","genre":"drama"},
//!  "user_subscription":{"plan":"premium","status":"active","started_at":"2024-03-01","auto_renew":true,"monthly_price":15.99},
//!  "event_details":{"duration_seconds":1312,"position_seconds":210,"quality":"1080p",
//!                   "search_query":null,"results_count":null},
//!  "user_action":["play","pause"],
//!  "recommendations":[{"media_id":"m00007","title":"…","score":0.93}],
//!  "search_history":["space documentary"]}
//! ```
//! `content` is null for a search; `episode` and `season` are null for a movie or a
//! documentary. `event_details` carries playback fields on `content_play`, the query and
//! result count on `search`. Key: `user_id`. Corruptions: `missing_field` (no `user_id`),
//! `wrong_type` (`timestamp` as epoch milliseconds, a number: in Avro it no longer fits the
//! schema, so it is sent as JSON text, unframed).

/// The records' Avro schema for `--format avro`: the JSON shape above, with `event_type` an
/// enum, the timestamp `timestamp-millis`, `started_at` a `date` and `monthly_price` a
/// `decimal(6,2)`.
pub const AVRO_SCHEMA: &str = r#"{"type": "record", "name": "CustomerEvent", "namespace": "lakectl.generate",
 "fields": [
  {"name": "event_id", "type": "string"},
  {"name": "user_id", "type": ["null", "string"], "default": null},
  {"name": "event_type", "type": {"type": "enum", "name": "EventType", "symbols": ["content_play", "browse", "search"]}},
  {"name": "timestamp", "type": {"type": "long", "logicalType": "timestamp-millis"}},
  {"name": "device", "type": {"type": "record", "name": "Device", "fields": [
    {"name": "type", "type": "string"}, {"name": "os", "type": "string"},
    {"name": "os_version", "type": "string"}, {"name": "app_version", "type": "string"},
    {"name": "model", "type": "string"}]}},
  {"name": "location", "type": {"type": "record", "name": "Location", "fields": [
    {"name": "country", "type": "string"}, {"name": "city", "type": "string"},
    {"name": "region", "type": "string"}, {"name": "timezone", "type": "string"}]}},
  {"name": "content", "default": null, "type": ["null", {"type": "record", "name": "Content", "fields": [
    {"name": "media_id", "type": "string"}, {"name": "title", "type": "string"},
    {"name": "type", "type": "string"},
    {"name": "episode", "type": ["null", "int"], "default": null},
    {"name": "season", "type": ["null", "int"], "default": null},
    {"name": "provider", "type": "string"}, {"name": "genre", "type": "string"}]}]},
  {"name": "user_subscription", "type": {"type": "record", "name": "Subscription", "fields": [
    {"name": "plan", "type": "string"}, {"name": "status", "type": "string"},
    {"name": "started_at", "type": {"type": "int", "logicalType": "date"}},
    {"name": "auto_renew", "type": "boolean"},
    {"name": "monthly_price", "type": {"type": "bytes", "logicalType": "decimal", "precision": 6, "scale": 2}}]}},
  {"name": "event_details", "type": {"type": "record", "name": "EventDetails", "fields": [
    {"name": "duration_seconds", "type": ["null", "int"], "default": null},
    {"name": "position_seconds", "type": ["null", "int"], "default": null},
    {"name": "quality", "type": ["null", "string"], "default": null},
    {"name": "search_query", "type": ["null", "string"], "default": null},
    {"name": "results_count", "type": ["null", "int"], "default": null}]}},
  {"name": "user_action", "type": {"type": "array", "items": "string"}},
  {"name": "recommendations", "type": {"type": "array", "items": {"type": "record", "name": "Recommendation", "fields": [
    {"name": "media_id", "type": "string"}, {"name": "title", "type": "string"},
    {"name": "score", "type": "double"}]}}},
  {"name": "search_history", "type": {"type": "array", "items": "string"}}
 ]}"#;

use super::json::Json;
use super::random::{Rand, Zipf};
use super::{stream, Burst, Event, Profile, Slots, Users};

const USERS: usize = 20_000;
const TITLES: usize = 3_000;
const SESSION: Burst = Burst {
    events: 5.0,
    gap_s: 45.0,
    pause_s: 120.0,
};
/// Titles' attributes come from entity streams above the users'.
const TITLE_STREAMS: u64 = 1 << 24;

/// (type, os, os versions, model)
const DEVICES: &[(&str, &str, &[&str], &str)] = &[
    ("mobile", "iOS", &["17.6", "18.1", "18.2"], "iPhone 15"),
    ("mobile", "Android", &["13", "14", "15"], "Pixel 8"),
    ("mobile", "Android", &["13", "14"], "Galaxy S24"),
    ("tv", "tvOS", &["17.5", "18.0"], "Apple TV 4K"),
    ("tv", "Android TV", &["11", "12"], "Shield TV"),
    ("tv", "Tizen", &["7.0", "8.0"], "Samsung QN90"),
    ("desktop", "Windows", &["10", "11"], "PC"),
    ("desktop", "macOS", &["14.6", "15.1"], "MacBook Air"),
    ("tablet", "iPadOS", &["17.6", "18.1"], "iPad Air"),
];
/// (country, city, region, timezone)
const PLACES: &[(&str, &str, &str, &str)] = &[
    ("US", "New York", "NY", "America/New_York"),
    ("US", "Los Angeles", "CA", "America/Los_Angeles"),
    ("BR", "São Paulo", "SP", "America/Sao_Paulo"),
    ("DE", "Berlin", "BE", "Europe/Berlin"),
    ("GB", "London", "ENG", "Europe/London"),
    ("FR", "Paris", "IDF", "Europe/Paris"),
    ("ES", "Madrid", "MD", "Europe/Madrid"),
    ("CH", "Zürich", "ZH", "Europe/Zurich"),
    ("IN", "Mumbai", "MH", "Asia/Kolkata"),
    ("JP", "Tokyo", "13", "Asia/Tokyo"),
    ("MX", "Mexico City", "CMX", "America/Mexico_City"),
    ("AU", "Sydney", "NSW", "Australia/Sydney"),
    ("CA", "Toronto", "ON", "America/Toronto"),
];
/// (plan, monthly price in cents)
const PLANS: &[((&str, i64), f64)] = &[
    (("basic", 799), 0.35),
    (("standard", 1199), 0.4),
    (("premium", 1599), 0.25),
];
const GENRES: &[&str] = &[
    "drama",
    "comedy",
    "action",
    "documentary",
    "thriller",
    "sci-fi",
    "romance",
    "animation",
    "horror",
    "crime",
];
const PROVIDERS: &[&str] = &[
    "Northwind Studios",
    "Blue Harbor Pictures",
    "Lumen Films",
    "Red Fern Media",
    "Atlas TV",
];
const WORDS_A: &[&str] = &[
    "Silent", "Last", "Hidden", "Broken", "Golden", "Distant", "Wild", "Secret", "Lost", "Bright",
];
const WORDS_B: &[&str] = &[
    "River", "Empire", "Garden", "Signal", "Harbor", "Kingdom", "Winter", "Machine", "Island",
    "Voices",
];
const QUERIES: &[&str] = &[
    "space documentary",
    "comedy specials",
    "true crime",
    "anime",
    "cooking show",
    "90s movies",
    "nature",
    "thriller series",
];
const QUALITIES: &[&str] = &["480p", "720p", "1080p", "4k"];

struct Title {
    media_id: String,
    title: String,
    kind: &'static str,
    season_episode: Option<(i64, i64)>,
    provider: &'static str,
    genre: &'static str,
}

fn title(seed: u64, id: usize) -> Title {
    let mut r = Rand::stream(seed, stream::ENTITY + TITLE_STREAMS + id as u64);
    let kind = r.weighted(&[("movie", 0.45), ("series", 0.45), ("documentary", 0.1)]);
    Title {
        media_id: format!("m{id:05}"),
        title: format!("The {} {}", r.pick(WORDS_A), r.pick(WORDS_B)),
        kind,
        season_episode: (kind == "series").then(|| (r.between(1, 6), r.between(1, 12))),
        provider: r.pick(PROVIDERS),
        genre: if kind == "documentary" {
            "documentary"
        } else {
            r.pick(GENRES)
        },
    }
}

struct Viewer {
    rank: usize,
    user: String,
    left: u32,
    /// Queries of this session so far.
    searches: Vec<&'static str>,
}

pub struct CustomerEvents {
    seed: u64,
    slots: Slots<Viewer>,
    users: Users,
    titles: Zipf,
}

impl CustomerEvents {
    pub fn new(seed: u64, start_ms: i64, event_rate: f64) -> CustomerEvents {
        let users = Users::new(USERS);
        let slots = Slots::new(seed, start_ms, event_rate, &SESSION, |rng| {
            new_viewer(rng, &users)
        });
        CustomerEvents {
            seed,
            slots,
            users,
            titles: Zipf::new(TITLES, 1.0),
        }
    }
}

fn new_viewer(rng: &mut Rand, users: &Users) -> Viewer {
    let (rank, user) = users.draw(rng);
    Viewer {
        rank,
        user,
        left: rng.count_with_mean(SESSION.events),
        searches: Vec::new(),
    }
}

impl Profile for CustomerEvents {
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
        let viewer = self.slots.actor(slot);
        let event_type = rng.weighted(&[("content_play", 0.55), ("browse", 0.3), ("search", 0.15)]);
        let query = (event_type == "search").then(|| rng.pick(QUERIES));
        if let Some(q) = query {
            viewer.searches.push(q);
        }
        // The user's own attributes, the same in every event of theirs.
        let mut user = Rand::stream(self.seed, stream::ENTITY + viewer.rank as u64);
        let (device_type, os, os_versions, model) = user.pick(DEVICES);
        let (country, city, region, timezone) = user.pick(PLACES);
        let (plan, price) = user.weighted(PLANS);
        let started_days = user.between(18_000, 20_400); // 2019-04 to 2025-11
        let app_minor = user.between(0, 14);

        event.key.clone_from(&viewer.user);
        event.value.clear();
        let mut o = Json::object(&mut event.value);
        o.str("event_id", &event.event_id);
        if corruption != Some("missing_field") {
            o.str("user_id", &viewer.user);
        }
        o.str("event_type", event_type);
        if corruption == Some("wrong_type") {
            o.int("timestamp", event.event_ms);
        } else {
            o.time("timestamp", event.event_ms);
        }
        let mut d = o.nested("device");
        d.str("type", device_type)
            .str("os", os)
            .str("os_version", user.pick(os_versions))
            .str("app_version", &format!("5.{app_minor}.{}", user.below(4)))
            .str("model", model);
        d.end();
        let mut l = o.nested("location");
        l.str("country", country)
            .str("city", city)
            .str("region", region)
            .str("timezone", timezone);
        l.end();
        if query.is_some() {
            o.null("content");
        } else {
            let t = title(self.seed, self.titles.sample(rng));
            let mut c = o.nested("content");
            c.str("media_id", &t.media_id)
                .str("title", &t.title)
                .str("type", t.kind)
                .opt_int("episode", t.season_episode.map(|(_, e)| e))
                .opt_int("season", t.season_episode.map(|(s, _)| s))
                .str("provider", t.provider)
                .str("genre", t.genre);
            c.end();
        }
        let mut s = o.nested("user_subscription");
        let mut started = Vec::with_capacity(24);
        super::json::write_timestamp(&mut started, started_days * 86_400_000);
        s.str("plan", plan)
            .str(
                "status",
                if started_days % 17 == 0 {
                    "past_due"
                } else {
                    "active"
                },
            )
            .str(
                "started_at",
                std::str::from_utf8(&started[..10]).expect("ASCII"),
            )
            .bool("auto_renew", started_days % 5 != 0)
            .cents("monthly_price", price);
        s.end();
        let mut details = o.nested("event_details");
        if event_type == "content_play" {
            let duration = rng.between(600, 7_200);
            details
                .int("duration_seconds", duration)
                .int("position_seconds", rng.between(0, duration))
                .str("quality", rng.pick(QUALITIES));
        } else {
            details
                .null("duration_seconds")
                .null("position_seconds")
                .null("quality");
        }
        details
            .opt_str("search_query", query)
            .opt_int("results_count", query.map(|_| rng.between(0, 60)));
        details.end();
        let mut actions = o.array("user_action");
        let action_choices: &[&str] = match event_type {
            "content_play" => &["play", "pause", "seek", "resume", "skip_intro"],
            "browse" => &["scroll", "open_details", "add_to_list"],
            _ => &["type", "submit", "open_result"],
        };
        for _ in 0..rng.between(1, 3) {
            actions.str("", rng.pick(action_choices));
        }
        actions.end();
        let mut recs = o.array("recommendations");
        for _ in 0..rng.between(0, 3) {
            let t = title(self.seed, self.titles.sample(rng));
            let mut r = recs.nested("");
            r.str("media_id", &t.media_id)
                .str("title", &t.title)
                .float("score", rng.unit(), 3);
            r.end();
        }
        recs.end();
        let mut history = o.array("search_history");
        for q in &viewer.searches {
            history.str("", q);
        }
        history.end();
        o.end();

        viewer.left -= 1;
        if viewer.left == 0 {
            let next = new_viewer(rng, &self.users);
            self.slots.replace(slot, rng, SESSION.pause_s, next);
        } else {
            self.slots.again(slot, rng, SESSION.gap_s);
        }
    }
}

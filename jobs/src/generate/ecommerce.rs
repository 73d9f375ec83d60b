//! `ecommerce`: a shop's events. A shopping session (mean 6 events, about 30 s apart) views
//! and searches Zipf-popular products, adds some to the cart and may buy what it added.
//! Each product has a fixed category and price (log-normal, median about 33.00).
//!
//! ```json
//! {"event_id":"…","event_type":"purchase","user_id":"u004711","session_id":"…",
//!  "product_id":"p00042","category":"electronics","price":129.99,"quantity":2,
//!  "revenue":259.98,"search_query":null,"device":"mobile",
//!  "event_time":"2026-01-01T00:00:01.234Z"}
//! ```
//! `quantity` is 1–5 for `add_to_cart` and `purchase` and 1 otherwise; `revenue` is
//! `price × quantity` on purchases and null otherwise; `search_query` is set on searches.
//! Key: `user_id`. Corruptions, one per check a shop runs: `missing_field` (no `product_id`),
//! `wrong_type` (`price` as a string with a decimal comma), `negative_price`,
//! `bad_quantity` (0 or 500–999), `bad_time` (in 2099 or before the shop opened in 2020),
//! `unknown_event_type`.

use super::json::Json;
use super::random::{Rand, Zipf};
use super::{stream, Burst, Event, Profile, Slots, Users};

const USERS: usize = 50_000;
const PRODUCTS: usize = 2_000;
const SESSION: Burst = Burst {
    events: 6.0,
    gap_s: 30.0,
    pause_s: 90.0,
};

pub const CATEGORIES: &[&str] = &[
    "electronics",
    "books",
    "clothing",
    "home",
    "sports",
    "toys",
    "beauty",
    "grocery",
];
const DEVICES: &[(&str, f64)] = &[("desktop", 0.4), ("mobile", 0.5), ("tablet", 0.1)];
const SEARCHES: &[&str] = &[
    "headphones",
    "running shoes",
    "coffee",
    "lego",
    "novel",
    "desk lamp",
    "yoga mat",
    "phone case",
    "jacket",
    "blender",
];

/// A product's fixed category and price (in cents), from its own random stream.
pub fn product(seed: u64, id: usize) -> (&'static str, i64) {
    let mut r = Rand::stream(seed, stream::ENTITY + id as u64);
    let category = r.pick(CATEGORIES);
    let cents = (r.normal(3.5, 1.0).exp() * 100.0)
        .round()
        .clamp(99.0, 500_000.0) as i64;
    (category, cents)
}

struct Shopper {
    user: String,
    session_id: String,
    device: &'static str,
    left: u32,
    /// Products added to the cart and their quantities, not yet bought.
    cart: Vec<(usize, i64)>,
}

pub struct Ecommerce {
    seed: u64,
    slots: Slots<Shopper>,
    users: Users,
    products: Zipf,
}

impl Ecommerce {
    pub fn new(seed: u64, start_ms: i64, event_rate: f64) -> Ecommerce {
        let users = Users::new(USERS);
        let slots = Slots::new(seed, start_ms, event_rate, &SESSION, |rng| {
            new_shopper(rng, &users)
        });
        Ecommerce {
            seed,
            slots,
            users,
            products: Zipf::new(PRODUCTS, 0.9),
        }
    }
}

fn new_shopper(rng: &mut Rand, users: &Users) -> Shopper {
    let mut session_id = String::new();
    rng.uuid(&mut session_id);
    Shopper {
        user: users.draw(rng).1,
        session_id,
        device: rng.weighted(DEVICES),
        left: rng.count_with_mean(SESSION.events),
        cart: Vec::new(),
    }
}

/// 2099-01-01 and 2020-01-01, in ms: out of range for a shop that opened in 2020.
const FUTURE_MS: i64 = 4_070_908_800_000;
const BEFORE_OPENING_MS: i64 = 1_577_836_800_000;

impl Profile for Ecommerce {
    fn corruptions(&self) -> &'static [&'static str] {
        &[
            "missing_field",
            "wrong_type",
            "negative_price",
            "bad_quantity",
            "bad_time",
            "unknown_event_type",
        ]
    }

    fn next(
        &mut self,
        rng: &mut Rand,
        delay_ms: i64,
        corruption: Option<&'static str>,
        event: &mut Event,
    ) {
        let slot = self.slots.next_event(rng, delay_ms, event);
        let shopper = self.slots.actor(slot);
        // The last event of a session buys the cart when there is one.
        let event_type = if shopper.left == 1 && !shopper.cart.is_empty() && rng.chance(0.6) {
            "purchase"
        } else {
            rng.weighted(&[("page_view", 0.6), ("search", 0.2), ("add_to_cart", 0.2)])
        };
        let (product_id, quantity) = match event_type {
            "purchase" => shopper
                .cart
                .swap_remove(rng.below(shopper.cart.len() as u64) as usize),
            "add_to_cart" => {
                let item = (self.products.sample(rng), rng.between(1, 5));
                shopper.cart.push(item);
                item
            }
            _ => (self.products.sample(rng), 1),
        };
        let (category, price) = product(self.seed, product_id);
        let quantity = match corruption {
            Some("bad_quantity") if rng.chance(0.5) => 0,
            Some("bad_quantity") => rng.between(500, 999),
            _ => quantity,
        };
        event.key.clone_from(&shopper.user);
        event.value.clear();
        let mut o = Json::object(&mut event.value);
        o.str("event_id", &event.event_id);
        match corruption {
            Some("unknown_event_type") => o.str("event_type", "wishlist_add"),
            _ => o.str("event_type", event_type),
        };
        o.str("user_id", &shopper.user)
            .str("session_id", &shopper.session_id);
        if corruption != Some("missing_field") {
            o.str("product_id", &format!("p{product_id:05}"));
        }
        o.str("category", category);
        match corruption {
            Some("negative_price") => o.cents("price", -price),
            Some("wrong_type") => o.str("price", &format!("{},{:02}", price / 100, price % 100)),
            _ => o.cents("price", price),
        };
        o.int("quantity", quantity);
        if event_type == "purchase" {
            o.cents("revenue", price * quantity);
        } else {
            o.null("revenue");
        }
        o.opt_str(
            "search_query",
            (event_type == "search").then(|| rng.pick(SEARCHES)),
        )
        .str("device", shopper.device);
        let time = match corruption {
            Some("bad_time") if rng.chance(0.5) => FUTURE_MS + event.event_ms % 86_400_000,
            Some("bad_time") => BEFORE_OPENING_MS - 86_400_000 + event.event_ms % 86_400_000,
            _ => event.event_ms,
        };
        o.time("event_time", time);
        o.end();
        shopper.left -= 1;
        if shopper.left == 0 {
            let next = new_shopper(rng, &self.users);
            self.slots.replace(slot, rng, SESSION.pause_s, next);
        } else {
            self.slots.again(slot, rng, SESSION.gap_s);
        }
    }
}

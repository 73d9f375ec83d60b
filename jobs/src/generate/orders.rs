//! `orders`: order lifecycles in an envelope. Every order follows one of
//! `order_created → payment_captured → shipped → delivered`, stopping early with
//! `cancelled` after creation (8 %) or after payment (4 %); the steps are about 20 s, 2 min
//! and 10 min apart. The business data is in `payload`, a JSON object serialised as a string,
//! and `checksum` is the SHA-256 (lower-case hex) of the payload's bytes.
//!
//! ```json
//! {"event_id":"…","event_type":"payment_captured","schema_version":"1.2",
//!  "event_time":"2026-01-01T00:00:01.234Z","ingest_time":"2026-01-01T00:00:01.734Z",
//!  "tenant_id":"tenant-03","user_id":"u001234","session_id":"…",
//!  "source_system":"payment-service","environment":"production","record_source":"orders-api",
//!  "payload":"{\"order_id\":\"o-…\",\"status\":\"paid\",…}","checksum":"9f86d0…"}
//! ```
//! The payload holds `order_id`, `status`, `currency`, `amount` (sum of the items), `items`
//! (`sku`, `quantity`, `unit_price`), and per step `payment_method`, `carrier` and
//! `tracking_number`, or `reason`. `ingest_time` is 50–999 ms after the arrival time.
//! Key: `order_id`.
//! Corruptions: `bad_checksum` (the amount was changed after the checksum was taken),
//! `missing_field` (no `event_time`), `wrong_type` (`payload` as an object, not a string).

use sha2::{Digest, Sha256};

use super::json::Json;
use super::random::{Rand, Zipf};
use super::{Burst, Event, Profile, Slots, Users};

const USERS: usize = 50_000;
/// Mean seconds from each step to the next: created → paid → shipped → delivered.
const STEP_GAPS_S: [f64; 3] = [20.0, 120.0, 600.0];
const GAP_BETWEEN_ORDERS_S: f64 = 20.0;

const CURRENCIES: &[(&str, f64)] = &[("EUR", 0.5), ("USD", 0.35), ("GBP", 0.15)];
const PAYMENT_METHODS: &[&str] = &["card", "paypal", "bank_transfer", "apple_pay"];
const CARRIERS: &[&str] = &["DHL", "UPS", "FedEx", "PostNL", "Royal Mail"];
const CANCEL_REASONS: &[&str] = &[
    "customer_request",
    "payment_failed",
    "out_of_stock",
    "fraud_check",
];
const SOURCES: [&str; 4] = [
    "checkout-service",
    "payment-service",
    "fulfillment-service",
    "fulfillment-service",
];

struct Order {
    order_id: String,
    user: String,
    session_id: String,
    tenant: u32,
    currency: &'static str,
    /// (sku, quantity, unit price in cents)
    items: Vec<(u32, i64, i64)>,
    /// The next step: 0 created, 1 paid, 2 shipped, 3 delivered.
    step: usize,
    /// The order ends cancelled instead of reaching this step.
    cancel_at: Option<usize>,
}

pub struct Orders {
    slots: Slots<Order>,
    users: Users,
    skus: Zipf,
    payload: Vec<u8>,
}

impl Orders {
    pub fn new(seed: u64, start_ms: i64, event_rate: f64) -> Orders {
        let users = Users::new(USERS);
        let skus = Zipf::new(5_000, 0.9);
        // About 3.9 events an order (all four steps but for the cancelled ones), with the
        // steps' gaps in between.
        let burst = Burst {
            events: 3.9,
            gap_s: STEP_GAPS_S.iter().sum::<f64>() / 2.9,
            pause_s: GAP_BETWEEN_ORDERS_S,
        };
        let slots = Slots::new(seed, start_ms, event_rate, &burst, |rng| {
            new_order(rng, &users, &skus)
        });
        Orders {
            slots,
            users,
            skus,
            payload: Vec::with_capacity(512),
        }
    }
}

fn new_order(rng: &mut Rand, users: &Users, skus: &Zipf) -> Order {
    let mut order_id = String::from("o-");
    let mut uuid = String::new();
    rng.uuid(&mut uuid);
    order_id.push_str(&uuid[..18]);
    let mut session_id = String::new();
    rng.uuid(&mut session_id);
    let items = (0..rng.between(1, 3))
        .map(|_| {
            let sku = skus.sample(rng) as u32;
            (sku, rng.between(1, 3), rng.between(299, 19_999))
        })
        .collect();
    let cancel_at = match rng.unit() {
        u if u < 0.08 => Some(1),
        u if u < 0.12 => Some(2),
        _ => None,
    };
    Order {
        order_id,
        user: users.draw(rng).1,
        session_id,
        tenant: 1 + rng.below(5) as u32,
        currency: rng.weighted(CURRENCIES),
        items,
        step: 0,
        cancel_at,
    }
}

/// The lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut hex = String::with_capacity(64);
    for b in digest {
        use std::fmt::Write;
        write!(hex, "{b:02x}").expect("write to String");
    }
    hex
}

impl Profile for Orders {
    fn corruptions(&self) -> &'static [&'static str] {
        &["bad_checksum", "missing_field", "wrong_type"]
    }

    fn next(
        &mut self,
        rng: &mut Rand,
        delay_ms: i64,
        corruption: Option<&'static str>,
        event: &mut Event,
    ) {
        let slot = self.slots.next_event(rng, delay_ms, event);
        let at = event.arrival_ms;
        let order = self.slots.actor(slot);
        let cancelled = order.cancel_at == Some(order.step);
        let (event_type, status) = match (cancelled, order.step) {
            (true, _) => ("cancelled", "cancelled"),
            (false, 0) => ("order_created", "created"),
            (false, 1) => ("payment_captured", "paid"),
            (false, 2) => ("shipped", "shipped"),
            (false, _) => ("delivered", "delivered"),
        };
        let amount: i64 = order.items.iter().map(|(_, q, p)| q * p).sum();

        self.payload.clear();
        let mut p = Json::object(&mut self.payload);
        p.str("order_id", &order.order_id)
            .str("status", status)
            .str("currency", order.currency)
            .cents("amount", amount);
        let mut items = p.array("items");
        for (sku, quantity, unit_price) in &order.items {
            let mut item = items.nested("");
            item.str("sku", &format!("SKU-{sku:05}"))
                .int("quantity", *quantity)
                .cents("unit_price", *unit_price);
            item.end();
        }
        items.end();
        match event_type {
            "payment_captured" => {
                p.str("payment_method", rng.pick(PAYMENT_METHODS));
            }
            "shipped" => {
                p.str("carrier", rng.pick(CARRIERS)).str(
                    "tracking_number",
                    &format!("TR{:010}", rng.below(10_000_000_000)),
                );
            }
            "cancelled" => {
                p.str("reason", rng.pick(CANCEL_REASONS));
            }
            _ => {}
        }
        p.end();
        let checksum = sha256_hex(&self.payload);
        if corruption == Some("bad_checksum") {
            // The amount changed in transit: one cent more than the checksummed payload says.
            let text = String::from_utf8_lossy(&self.payload).into_owned();
            let was = format!("\"amount\":{}.{:02}", amount / 100, amount % 100);
            let now = format!(
                "\"amount\":{}.{:02}",
                (amount + 1) / 100,
                (amount + 1) % 100
            );
            self.payload = text.replacen(&was, &now, 1).into_bytes();
        }

        event.key.clone_from(&order.order_id);
        event.value.clear();
        let mut o = Json::object(&mut event.value);
        o.str("event_id", &event.event_id)
            .str("event_type", event_type)
            .str("schema_version", "1.2");
        if corruption != Some("missing_field") {
            o.time("event_time", event.event_ms);
        }
        o.time("ingest_time", at + 50 + rng.below(950) as i64)
            .str("tenant_id", &format!("tenant-{:02}", order.tenant))
            .str("user_id", &order.user)
            .str("session_id", &order.session_id)
            .str("source_system", SOURCES[order.step.min(3)])
            .str("environment", "production")
            .str("record_source", "orders-api");
        let payload = std::str::from_utf8(&self.payload).expect("payload is UTF-8");
        if corruption == Some("wrong_type") {
            // The payload object itself instead of its text.
            o.raw("payload", payload);
        } else {
            o.str("payload", payload);
        }
        o.str("checksum", &checksum);
        o.end();

        if cancelled || order.step == 3 {
            let next = new_order(rng, &self.users, &self.skus);
            self.slots.replace(slot, rng, GAP_BETWEEN_ORDERS_S, next);
        } else {
            let gap_s = STEP_GAPS_S[order.step];
            order.step += 1;
            self.slots.again(slot, rng, gap_s);
        }
    }
}

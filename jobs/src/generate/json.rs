//! Writing generated records as compact JSON straight into a byte buffer: no intermediate
//! values, fields in a fixed order, so a seed always gives the same bytes.

use std::io::Write;

/// An open JSON object or array in `out`; `end` closes it.
pub struct Json<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
    close: u8,
}

impl<'a> Json<'a> {
    pub fn object(out: &'a mut Vec<u8>) -> Json<'a> {
        out.push(b'{');
        Json {
            out,
            first: true,
            close: b'}',
        }
    }

    fn key(&mut self, key: &str) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        if !key.is_empty() {
            // Keys are our own plain ASCII names: no escaping needed.
            self.out.push(b'"');
            self.out.extend_from_slice(key.as_bytes());
            self.out.extend_from_slice(b"\":");
        }
    }

    /// A string field (`key` empty inside an array).
    pub fn str(&mut self, key: &str, value: &str) -> &mut Self {
        self.key(key);
        serde_json::to_writer(&mut *self.out, value).expect("write to Vec");
        self
    }

    pub fn opt_str(&mut self, key: &str, value: Option<&str>) -> &mut Self {
        match value {
            Some(v) => self.str(key, v),
            None => self.null(key),
        }
    }

    pub fn int(&mut self, key: &str, value: i64) -> &mut Self {
        self.key(key);
        write!(self.out, "{value}").expect("write to Vec");
        self
    }

    pub fn opt_int(&mut self, key: &str, value: Option<i64>) -> &mut Self {
        match value {
            Some(v) => self.int(key, v),
            None => self.null(key),
        }
    }

    /// A fixed-point number with two decimals, from hundredths: exact for money.
    pub fn cents(&mut self, key: &str, cents: i64) -> &mut Self {
        self.key(key);
        let sign = if cents < 0 { "-" } else { "" };
        let abs = cents.unsigned_abs();
        write!(self.out, "{sign}{}.{:02}", abs / 100, abs % 100).expect("write to Vec");
        self
    }

    pub fn float(&mut self, key: &str, value: f64, decimals: usize) -> &mut Self {
        self.key(key);
        write!(self.out, "{value:.decimals$}").expect("write to Vec");
        self
    }

    pub fn bool(&mut self, key: &str, value: bool) -> &mut Self {
        self.key(key);
        self.out
            .extend_from_slice(if value { b"true" } else { b"false" });
        self
    }

    /// A value that is already JSON text.
    pub fn raw(&mut self, key: &str, json: &str) -> &mut Self {
        self.key(key);
        self.out.extend_from_slice(json.as_bytes());
        self
    }

    pub fn null(&mut self, key: &str) -> &mut Self {
        self.key(key);
        self.out.extend_from_slice(b"null");
        self
    }

    /// An RFC 3339 UTC timestamp with milliseconds, from milliseconds since the epoch.
    pub fn time(&mut self, key: &str, millis: i64) -> &mut Self {
        self.key(key);
        self.out.push(b'"');
        write_timestamp(self.out, millis);
        self.out.push(b'"');
        self
    }

    /// A nested object; write its fields, then `end` it.
    pub fn nested(&mut self, key: &str) -> Json<'_> {
        self.key(key);
        Json::object(&mut *self.out)
    }

    /// A nested array; write its items with an empty key, then `end` it.
    pub fn array(&mut self, key: &str) -> Json<'_> {
        self.key(key);
        self.out.push(b'[');
        Json {
            out: &mut *self.out,
            first: true,
            close: b']',
        }
    }

    pub fn end(self) {
        self.out.push(self.close);
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for milliseconds since 1970 (UTC, proleptic Gregorian).
pub fn write_timestamp(out: &mut Vec<u8>, millis: i64) {
    let days = millis.div_euclid(86_400_000);
    let ms_of_day = millis.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    let (h, min, s, ms) = (
        ms_of_day / 3_600_000,
        ms_of_day / 60_000 % 60,
        ms_of_day / 1000 % 60,
        ms_of_day % 1000,
    );
    write!(out, "{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}.{ms:03}Z").expect("write to Vec");
}

/// The calendar date of a day number (days since 1970-01-01), after Howard Hinnant's
/// `civil_from_days`.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_match_chrono() {
        let mut r = super::super::random::Rand::stream(5, 5);
        for _ in 0..20_000 {
            // 1900 to 2200
            let ms = r.between(-2_208_988_800_000, 7_258_118_400_000);
            let mut ours = Vec::new();
            write_timestamp(&mut ours, ms);
            let theirs = chrono::DateTime::from_timestamp_millis(ms)
                .unwrap()
                .format("%Y-%m-%dT%H:%M:%S%.3fZ")
                .to_string();
            assert_eq!(String::from_utf8(ours).unwrap(), theirs);
        }
    }

    #[test]
    fn objects_nest_and_escape() {
        let mut out = Vec::new();
        let mut o = Json::object(&mut out);
        o.str("title", "Amélie \"2\"")
            .int("n", -3)
            .cents("price", -5)
            .null("x");
        let mut inner = o.nested("device");
        inner.str("os", "iOS").bool("ok", true);
        inner.end();
        let mut list = o.array("tags");
        list.str("", "a").str("", "b");
        list.end();
        o.time("at", 0);
        o.end();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            r#"{"title":"Amélie \"2\"","n":-3,"price":-0.05,"x":null,"device":{"os":"iOS","ok":true},"tags":["a","b"],"at":"1970-01-01T00:00:00.000Z"}"#
        );
        serde_json::from_str::<serde_json::Value>(&text).unwrap();
    }
}

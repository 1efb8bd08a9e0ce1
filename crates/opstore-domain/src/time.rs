//! Timestamps with a portable text form, and clocks.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A UTC instant with microsecond precision.
///
/// Serialized as RFC 3339 with exactly six fractional digits and `Z`
/// (`2026-01-02T03:04:05.000006Z`), so the text form sorts in time order on every
/// backend and the precision is the one PostgreSQL keeps.
///
/// ```
/// use std::time::Duration;
/// use opstore_domain::{Timestamp, json};
///
/// let seen: Timestamp = "2026-03-01T10:15:00+01:00".parse()?;
/// assert_eq!(seen.to_string(), "2026-03-01T09:15:00.000000Z"); // normalized to UTC
/// let later = seen.add(Duration::from_millis(1500));
/// assert_eq!(later.to_text(), "2026-03-01T09:15:01.500000Z");
/// assert_eq!(later.since(seen), Duration::from_millis(1500));
/// // Text order is time order, which is what makes range filters portable.
/// assert!(seen < later && seen.to_text() < later.to_text());
/// assert_eq!(json!(seen), json!("2026-03-01T09:15:00.000000Z"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The current wall-clock time, truncated to microseconds.
    pub fn now() -> Self {
        Timestamp(Utc::now().timestamp_micros())
    }

    /// From microseconds since the Unix epoch.
    pub const fn from_micros(micros: i64) -> Self {
        Timestamp(micros)
    }

    /// Microseconds since the Unix epoch.
    pub const fn as_micros(self) -> i64 {
        self.0
    }

    /// From whole milliseconds since the Unix epoch.
    pub const fn from_millis(millis: i64) -> Self {
        Timestamp(millis.saturating_mul(1000))
    }

    /// Milliseconds since the Unix epoch (floored).
    pub const fn as_millis(self) -> i64 {
        self.0.div_euclid(1000)
    }

    /// The instant as a chrono value.
    pub fn to_datetime(self) -> DateTime<Utc> {
        Utc.timestamp_micros(self.0)
            .single()
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }

    /// From a chrono value (sub-microsecond digits are dropped).
    pub fn from_datetime(dt: DateTime<Utc>) -> Self {
        Timestamp(dt.timestamp_micros())
    }

    /// This instant moved forward by `d` (saturating).
    #[allow(clippy::should_implement_trait)]
    pub fn add(self, d: Duration) -> Self {
        Timestamp(
            self.0
                .saturating_add(i64::try_from(d.as_micros()).unwrap_or(i64::MAX)),
        )
    }

    /// This instant moved back by `d` (saturating).
    #[allow(clippy::should_implement_trait)]
    pub fn sub(self, d: Duration) -> Self {
        Timestamp(
            self.0
                .saturating_sub(i64::try_from(d.as_micros()).unwrap_or(i64::MAX)),
        )
    }

    /// Time from `earlier` to `self`, zero when `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_micros(u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0))
    }

    /// The canonical text form.
    pub fn to_text(self) -> String {
        match self.fixed_text() {
            Some(buf) => String::from_utf8_lossy(&buf).into_owned(),
            None => self
                .to_datetime()
                .to_rfc3339_opts(SecondsFormat::Micros, true),
        }
    }

    /// The canonical text when the year has four digits, formatted by hand on the stack:
    /// this runs on every write of every timestamp field, and a general-purpose
    /// formatter costs several times more.
    fn fixed_text(self) -> Option<[u8; TEXT_LEN]> {
        let micros = self.0.rem_euclid(1_000_000);
        let secs = self.0.div_euclid(1_000_000);
        let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        let (year, month, day) = civil_from_days(days);
        if !(0..=9999).contains(&year) {
            return None;
        }
        let mut out = *b"0000-00-00T00:00:00.000000Z";
        put_digits(&mut out[0..4], year);
        put_digits(&mut out[5..7], month);
        put_digits(&mut out[8..10], day);
        put_digits(&mut out[11..13], sod / 3600);
        put_digits(&mut out[14..16], sod / 60 % 60);
        put_digits(&mut out[17..19], sod % 60);
        put_digits(&mut out[20..26], micros);
        Some(out)
    }
}

/// Length of the canonical text of a four-digit year.
const TEXT_LEN: usize = 27;

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({})", self.to_text())
    }
}

/// Writes a non-negative `n` as exactly `out.len()` decimal digits.
fn put_digits(out: &mut [u8], mut n: i64) {
    for slot in out.iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// Year, month and day of a day count since 1970-01-01 (proleptic Gregorian).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Error for text that is not an RFC 3339 timestamp.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an RFC 3339 timestamp: {0:?}")]
pub struct TimestampParseError(String);

impl FromStr for Timestamp {
    type Err = TimestampParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DateTime::parse_from_rfc3339(s)
            .map(|dt| Timestamp::from_datetime(dt.with_timezone(&Utc)))
            .map_err(|_| TimestampParseError(s.chars().take(64).collect()))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.fixed_text() {
            // The buffer is ASCII, so this borrows it without copying.
            Some(buf) => s.serialize_str(&String::from_utf8_lossy(&buf)),
            None => s.serialize_str(&self.to_text()),
        }
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl From<Timestamp> for serde_json::Value {
    fn from(t: Timestamp) -> Self {
        serde_json::Value::String(t.to_text())
    }
}

impl From<DateTime<Utc>> for Timestamp {
    fn from(dt: DateTime<Utc>) -> Self {
        Timestamp::from_datetime(dt)
    }
}

/// A source of time. Adapters that judge expiry in process use it, so tests can
/// move time forward instead of sleeping.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current instant.
    fn now(&self) -> Timestamp;
}

/// The system wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that only moves when told to. Clones share the same time.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock starting at `start`.
    pub fn new(start: Timestamp) -> Self {
        ManualClock(Arc::new(AtomicI64::new(start.as_micros())))
    }

    /// Moves the clock forward.
    pub fn advance(&self, d: Duration) {
        let micros = i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
        self.0.fetch_add(micros, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_micros(self.0.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_sorts_in_time_order() {
        let a = Timestamp::from_micros(1_700_000_000_000_000);
        let b = Timestamp::from_micros(1_700_000_000_000_001);
        assert!(a.to_text() < b.to_text());
        assert_eq!(a.to_text(), "2023-11-14T22:13:20.000000Z");
    }

    #[test]
    fn hand_formatting_matches_chrono() {
        let samples = [
            0,
            1,
            -1,
            951_782_400_123_456,
            1_709_164_799_999_999,
            4_102_444_800_000_000,
            -86_400_000_001,
        ];
        for micros in samples
            .into_iter()
            .chain((0..2000).map(|i| i * 7_919_000_003_001))
        {
            let t = Timestamp::from_micros(micros);
            assert_eq!(
                t.to_text(),
                t.to_datetime().to_rfc3339_opts(SecondsFormat::Micros, true),
                "{micros}"
            );
            assert_eq!(
                serde_json::to_value(t).unwrap(),
                serde_json::Value::String(t.to_text()),
                "{micros}"
            );
        }
    }

    #[test]
    fn parses_offsets_and_normalizes() {
        let t: Timestamp = "2023-11-14T23:13:20.5+01:00".parse().unwrap();
        assert_eq!(t.to_text(), "2023-11-14T22:13:20.500000Z");
        assert!("yesterday".parse::<Timestamp>().is_err());
    }
}

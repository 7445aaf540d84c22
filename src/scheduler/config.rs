//! The `[schedule]` section: when the daemon wakes and how far back it catches up.

use crate::checks::Invalid;
use chrono::NaiveTime;
use chrono_tz::Tz;
use serde::{Deserialize, Deserializer};

/// When the daemon wakes and how far back it catches up on its own.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// "HH:MM", in `time_zone`.
    #[serde(default = "default_wake_time", deserialize_with = "wake_time")]
    pub wake_time: NaiveTime,
    /// IANA time zone of `wake_time`, e.g. "Europe/London". Days are always UTC days.
    #[serde(default = "utc", deserialize_with = "time_zone")]
    pub time_zone: Tz,
    /// Days up to yesterday that `run` processes without an explicit backfill.
    #[serde(default = "default_catch_up_days")]
    pub catch_up_days: u32,
    /// After SIGTERM or SIGINT, how long in-flight work may take before the process exits
    /// anyway (what is unfinished is redone by the next run).
    #[serde(default = "default_shutdown_timeout_secs")]
    pub shutdown_timeout_secs: u64,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig {
            wake_time: default_wake_time(),
            time_zone: Tz::UTC,
            catch_up_days: default_catch_up_days(),
            shutdown_timeout_secs: default_shutdown_timeout_secs(),
        }
    }
}

impl ScheduleConfig {
    /// Checks what the types cannot.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.catch_up_days == 0 {
            return Err(Invalid::new(
                "catch_up_days",
                "must be at least 1 (yesterday)",
            ));
        }
        Ok(())
    }

    /// How long in-flight work may take after a shutdown request.
    pub fn grace(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.shutdown_timeout_secs)
    }
}

fn wake_time<'de, D: Deserializer<'de>>(deserializer: D) -> Result<NaiveTime, D::Error> {
    let raw = String::deserialize(deserializer)?;
    NaiveTime::parse_from_str(&raw, "%H:%M").map_err(|_| {
        serde::de::Error::custom(format!(
            "'{raw}' is not a time of day; write it as HH:MM, e.g. \"04:00\""
        ))
    })
}

fn time_zone<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Tz, D::Error> {
    let raw = String::deserialize(deserializer)?;
    raw.parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "'{raw}' is not an IANA time zone such as UTC or Europe/London"
        ))
    })
}

fn default_wake_time() -> NaiveTime {
    NaiveTime::MIN + chrono::Duration::hours(4)
}

fn utc() -> Tz {
    Tz::UTC
}

fn default_catch_up_days() -> u32 {
    7
}

fn default_shutdown_timeout_secs() -> u64 {
    30
}

//! Whether this host's clock agrees with Azure Storage's.
//!
//! Neither leases nor the order of a day's runs and collections depend on the daemons' clocks
//! agreeing, but other things do: the SMTP intake allows one lease life of difference, status
//! logs and alerts are read side by side, and Microsoft Entra refuses a sign-in assertion
//! (certificate credentials) dated minutes off its time.
//! Every answer of Azure Storage carries the service's time (`Date`, to the second). It was
//! made between the moment the request left and the moment its answer came, so together they
//! bound how far this host's clock is from the service's: a daemon whose clock is off by more
//! than [`TOLERANCE`] says so (at most once an hour while it stays off), and the least
//! difference the answers allow is a metric. Every daemon sharing a stage compares itself
//! with the same clock, so daemons within the tolerance of it are within twice of each other.

use async_trait::async_trait;
use azure_core::http::headers::HeaderName;
use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{Context, Request};
use chrono::{DateTime, Utc};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How far this host's clock may be from the stage's before the daemon warns.
pub const TOLERANCE: Duration = Duration::from_secs(30);
/// How often the warning is repeated while the clocks stay apart.
const REPEAT: Duration = Duration::from_secs(3600);

/// The least difference between the service's clock and this host's (positive: the service is
/// ahead) consistent with an answer dated `date` (to the second) to a request sent at `sent`
/// and answered at `received` by this host's clock; zero when equal clocks explain it.
pub fn least_offset(sent: DateTime<Utc>, received: DateTime<Utc>, date: DateTime<Utc>) -> f64 {
    let seconds = |d: chrono::TimeDelta| d.num_milliseconds() as f64 / 1000.0;
    // The service's time at its answer lies in [date, date + 1 s); this host's, in
    // [sent, received].
    let least = seconds(date - received);
    let most = seconds(date - sent) + 1.0;
    if least > 0.0 {
        least
    } else if most < 0.0 {
        most
    } else {
        0.0
    }
}

/// What the stage's answers said of this host's clock.
pub struct ClockWatch {
    stage: String,
    state: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    /// The latest answer's least difference, in seconds.
    offset: Option<f64>,
    /// When the daemon last warned, while the clocks are apart.
    warned: Option<Instant>,
}

impl ClockWatch {
    /// A watch for the stage described as `stage` in its log lines.
    pub fn new(stage: &str) -> Arc<ClockWatch> {
        Arc::new(ClockWatch {
            stage: stage.to_string(),
            state: Mutex::new(Seen::default()),
        })
    }

    /// Takes in one answer's least difference.
    pub fn observe(&self, offset: f64) {
        metrics::gauge!("comms_archiver_stage_clock_offset_seconds").set(offset);
        let mut seen = self.state.lock().unwrap();
        seen.offset = Some(offset);
        if offset.abs() >= TOLERANCE.as_secs_f64() {
            if seen.warned.is_none_or(|at| at.elapsed() >= REPEAT) {
                seen.warned = Some(Instant::now());
                tracing::warn!(stage = %self.stage, offset_secs = offset.round(),
                    tolerance_secs = TOLERANCE.as_secs(),
                    "this host's clock is {}: keep it synchronised (NTP, chrony); the times in \
                     the status logs and alerts of daemons sharing the stage are read side by \
                     side, and Entra refuses certificate sign-ins dated minutes off",
                    describe(offset));
            }
        } else if seen.warned.take().is_some() {
            tracing::info!(stage = %self.stage, offset_secs = offset.round(),
                "this host's clock agrees with the stage's again");
        }
    }

    /// The latest answer's word on this host's clock, for `check`; None before any answer.
    pub fn verdict(&self) -> Option<String> {
        let offset = self.state.lock().unwrap().offset?;
        Some(if offset.abs() >= TOLERANCE.as_secs_f64() {
            format!("this host's clock is {}", describe(offset))
        } else {
            "this host's clock agrees with the stage's".to_string()
        })
    }
}

fn describe(offset: f64) -> String {
    let side = if offset > 0.0 { "behind" } else { "ahead of" };
    format!("at least {:.0} s {side} the stage's", offset.abs())
}

/// Times each request to the stage (each try, so that retries' waits do not count) and hands
/// what its answer's `Date` says to the watch.
#[derive(Debug)]
pub struct ClockPolicy(pub Arc<ClockWatch>);

impl std::fmt::Debug for ClockWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClockWatch")
            .field("stage", &self.stage)
            .finish()
    }
}

#[async_trait]
impl Policy for ClockPolicy {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        let sent = Utc::now();
        let response = next[0].send(ctx, request, &next[1..]).await?;
        let received = Utc::now();
        let date = response
            .headers()
            .get_optional_str(&HeaderName::from_static("date"))
            .and_then(|d| DateTime::parse_from_rfc2822(d).ok());
        if let Some(date) = date {
            self.0.observe(least_offset(sent, received, date.to_utc()));
        }
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::Lines;
    use chrono::Timelike;
    use tracing_subscriber::util::SubscriberInitExt;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    #[test]
    fn equal_clocks_read_as_none_apart_however_slow_the_answer() {
        // Dated within the request, the second cut off.
        let sent = at("2026-12-07T10:00:00.700Z");
        assert_eq!(
            least_offset(
                sent,
                at("2026-12-07T10:00:00.900Z"),
                sent.with_nanosecond(0).unwrap()
            ),
            0.0
        );
        // A minute's upload, answered at its end.
        let answered = at("2026-12-07T10:01:00.400Z");
        assert_eq!(
            least_offset(sent, answered, at("2026-12-07T10:01:00Z")),
            0.0
        );
        assert_eq!(
            least_offset(sent, answered, at("2026-12-07T10:00:00Z")),
            0.0
        );
    }

    #[test]
    fn clocks_apart_read_as_at_least_what_the_answer_proves() {
        let sent = at("2026-12-07T10:00:00.000Z");
        let received = at("2026-12-07T10:00:00.200Z");
        // The service two minutes ahead: this host is behind by at least 119.8 s.
        let ahead = least_offset(sent, received, at("2026-12-07T10:02:00Z"));
        assert!((ahead - 119.8).abs() < 1e-9, "{ahead}");
        // The service two minutes behind: it answered before 09:58:01 of its clock.
        let behind = least_offset(sent, received, at("2026-12-07T09:58:00Z"));
        assert!((behind + 119.0).abs() < 1e-9, "{behind}");
    }

    #[test]
    fn a_clock_apart_is_warned_of_once_and_its_return_said() {
        let watch = ClockWatch::new("Azure storage devstoreaccount1 container c");
        let lines = Lines::default();
        let guard = lines.subscriber(0).set_default();
        assert_eq!(watch.verdict(), None);
        watch.observe(0.0);
        assert_eq!(lines.text(), "", "agreeing clocks say nothing");
        watch.observe(-29.0);
        assert_eq!(lines.text(), "", "within the tolerance");
        watch.observe(-95.0);
        watch.observe(-96.0);
        let warned = lines.text();
        assert_eq!(warned.lines().count(), 1, "once while apart: {warned}");
        assert!(
            warned.contains("\"level\":\"WARN\"")
                && warned.contains("at least 95 s ahead of the stage's")
                && warned.contains("\"offset_secs\":-95.0"),
            "{warned}"
        );
        assert_eq!(
            watch.verdict().unwrap(),
            "this host's clock is at least 96 s ahead of the stage's"
        );
        watch.observe(0.0);
        drop(guard);
        let text = lines.text();
        assert!(
            text.lines()
                .nth(1)
                .is_some_and(|l| l.contains("agrees with the stage's again")),
            "{text}"
        );
        assert_eq!(
            watch.verdict().unwrap(),
            "this host's clock agrees with the stage's"
        );
    }
}

//! The events that reach more than one place: each is one value whose `emit` writes the log
//! line, counts the metric and, where the day's status log lists it, notes the incident, so
//! that logs, metrics and the status log never disagree.
//!
//! Personal data stays out of metrics: their labels are kinds and connector names only.

use crate::report::StatusLog;
use std::time::Duration;

/// A request or operation that failed and is tried again after `wait`.
#[derive(Debug)]
pub struct Retry<'a> {
    /// Which side failed: "partner", "stage" or "mailbox" (the status log's incident side).
    pub side: &'static str,
    /// The metric's kind, e.g. "partner_request", "graph_request", "token_request".
    pub kind: &'static str,
    /// What happened, stable from one time to the next (the incident's kind), e.g.
    /// "answered 503 Service Unavailable; retried".
    pub what: String,
    /// The occurrence: URL, mailbox or error text, for the log and the incident's example.
    pub detail: String,
    /// The connector or mailbox it was for, for the log line.
    pub scope: &'a str,
    pub attempt: usize,
    pub wait: Duration,
}

impl Retry<'_> {
    pub fn emit(self) {
        tracing::warn!(side = self.side, kind = self.kind, scope = self.scope,
            attempt = self.attempt, wait_ms = self.wait.as_millis() as u64,
            detail = %self.detail, "{}", self.what);
        metrics::counter!("comms_archiver_retries_total", "kind" => self.kind).increment(1);
        let detail = self.detail;
        crate::incidents::note(self.side, &self.what, || detail);
    }
}

/// A connector-day that ended, complete or left open.
#[derive(Debug)]
pub struct DayFinished<'a> {
    pub log: &'a StatusLog,
    /// The connector's checkpoint after the day.
    pub checkpoint: Option<chrono::NaiveDate>,
    pub took: Duration,
}

impl DayFinished<'_> {
    pub fn emit(self) {
        let log = self.log;
        let connector = log.connector.clone();
        if let Some(checkpoint) = self.checkpoint {
            if let Some(midnight) = checkpoint.and_hms_opt(0, 0, 0) {
                metrics::gauge!("comms_archiver_last_complete_day_timestamp_seconds", "connector" => connector.clone())
                    .set(midnight.and_utc().timestamp() as f64);
            }
        }
        let state = if log.complete { "complete" } else { "open" };
        metrics::counter!("comms_archiver_days_total", "connector" => connector.clone(), "state" => state)
            .increment(1);
        metrics::histogram!("comms_archiver_day_duration_seconds", "connector" => connector)
            .record(self.took.as_secs_f64());
        tracing::info!(
            connector = %log.connector, day = %log.day, complete = log.complete,
            available_from_source = log.available_from_source,
            available_for_import = log.available_for_import,
            imported = log.imported,
            partially_imported = log.partially_imported,
            skipped_duplicates = log.skipped_duplicates,
            failed = log.failed,
            held = log.held,
            "day finished"
        );
    }
}

/// Bytes of rendered messages that reached the stage or a mailbox.
#[derive(Debug, Clone, Copy)]
pub enum Moved {
    /// Written to the stage for the first time.
    Staged,
    /// Accepted by a mailbox.
    Imported,
}

impl Moved {
    pub fn emit(self, connector: &str, bytes: usize) {
        let name = connector.to_string();
        match self {
            Moved::Staged => {
                metrics::counter!("comms_archiver_bytes_staged_total", "connector" => name)
                    .increment(bytes as u64)
            }
            Moved::Imported => {
                metrics::counter!("comms_archiver_bytes_imported_total", "connector" => name)
                    .increment(bytes as u64)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One emit reaches the three places: the day's incidents, the metric and the log.
    #[tokio::test]
    async fn a_retry_is_counted_noted_and_logged_once() {
        let handle = crate::telemetry::metrics_handle();
        let count = || {
            handle
                .render()
                .lines()
                .find(|l| l.starts_with("comms_archiver_retries_total{kind=\"test_retry\"}"))
                .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let before = count();
        let incidents = crate::incidents::Recorder::default();
        crate::incidents::within(Some(incidents.clone()), async {
            for attempt in 1..=2 {
                Retry {
                    side: "partner",
                    kind: "test_retry",
                    what: "answered 503 Service Unavailable; retried".into(),
                    detail: format!("https://partner.example/items attempt {attempt}"),
                    scope: "o2",
                    attempt,
                    wait: Duration::from_millis(5),
                }
                .emit();
            }
        })
        .await;
        assert_eq!(count() - before, 2);
        let noted = incidents.list();
        assert_eq!(noted.len(), 1, "{noted:?}");
        assert_eq!(noted[0].count, 2);
        assert_eq!(noted[0].side, "partner");
        assert!(noted[0].example.ends_with("attempt 1"), "{noted:?}");
    }
}

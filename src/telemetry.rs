//! Logging set-up and the events the pipeline emits.
//!
//! One structured event per item outcome (target `comms_archiver::item`), carrying connector,
//! day, item key, item id, mailbox and outcome, so a log shipper can rebuild any status log.

use crate::report::Reason;
use chrono::NaiveDate;
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Readable lines for a terminal.
    Human,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Installs the global subscriber: `RUST_LOG` filters (default `info`), output to stderr.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}

/// What happened to one copy of an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Imported,
    SkippedDuplicate,
    Failed(Reason),
}

/// The per-item outcome event.
#[derive(Debug)]
pub struct ItemOutcome<'a> {
    pub connector: &'a str,
    pub day: NaiveDate,
    pub item_key: &'a str,
    pub item_id: &'a str,
    pub mailbox: Option<&'a str>,
    pub outcome: Outcome,
    pub detail: &'a str,
}

impl ItemOutcome<'_> {
    /// Writes the event: info for imports and skips, warn for failures.
    pub fn emit(&self) {
        let day = self.day.to_string();
        let mailbox = self.mailbox.unwrap_or("");
        match self.outcome {
            Outcome::Imported | Outcome::SkippedDuplicate => tracing::info!(
                target: "comms_archiver::item",
                connector = self.connector,
                day = %day,
                item_key = self.item_key,
                item_id = self.item_id,
                mailbox,
                outcome = if self.outcome == Outcome::Imported { "imported" } else { "skipped_duplicate" },
                detail = self.detail,
                "item outcome"
            ),
            Outcome::Failed(reason) => tracing::warn!(
                target: "comms_archiver::item",
                connector = self.connector,
                day = %day,
                item_key = self.item_key,
                item_id = self.item_id,
                mailbox,
                outcome = "failed",
                reason = reason.as_str(),
                detail = self.detail,
                "item outcome"
            ),
        }
    }
}

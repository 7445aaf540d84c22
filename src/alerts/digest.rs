//! The digest: what a run's days left for a person, gathered from the days' reconciliations
//! and the import records, one per run (never one per item).

use super::AlertsConfig;
use crate::ledger::Ledger;
use crate::pipeline::Archiver;
use crate::report::StatusLog;
use chrono::{DateTime, Days, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

/// What needs a person, over the days a run processed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    pub generated_at: Option<DateTime<Utc>>,
    pub connectors: Vec<ConnectorDigest>,
}

/// One connector's part of the digest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectorDigest {
    pub connector: String,
    pub days: Vec<DayDigest>,
    /// Mapped employees (the mapping CSV's identifiers) with no copy for `silent_user_days`
    /// complete days up to the last day.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub silent_users: Vec<String>,
}

/// One day's part.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayDigest {
    pub day: NaiveDate,
    pub complete: bool,
    pub imported: u64,
    pub failed: u64,
    /// Failures that no later run retries, by reason.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub failed_for_good: BTreeMap<String, u64>,
    /// Copies held for a later delivery, by reason (catch-all copies among them).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub held: BTreeMap<String, u64>,
    /// What keeps the day open: its errors' reasons and details.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub open_because: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unmapped_users: Vec<String>,
    /// The day's evidence does not add up (the error says how).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconciliation_error: Option<String>,
    /// No items on a complete day of a connector that usually has some.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub silent_source: bool,
}

impl DayDigest {
    fn needs_a_person(&self) -> bool {
        self.failed > 0
            || !self.held.is_empty()
            || !self.complete
            || !self.unmapped_users.is_empty()
            || self.reconciliation_error.is_some()
            || self.silent_source
    }
}

impl Digest {
    /// Whether anything in it needs a person; a digest that does not is not sent.
    pub fn needs_a_person(&self) -> bool {
        self.connectors
            .iter()
            .any(|c| !c.silent_users.is_empty() || c.days.iter().any(DayDigest::needs_a_person))
    }

    /// The days of the digest with anything to say, over all connectors.
    fn counts(&self) -> (u64, u64, u64, usize) {
        let days = self.connectors.iter().flat_map(|c| c.days.iter());
        let (mut failed, mut held, mut open, mut imported) = (0, 0, 0, 0);
        for d in days {
            failed += d.failed;
            held += d.held.values().sum::<u64>();
            imported += d.imported;
            open += usize::from(!d.complete);
        }
        (imported, failed, held, open)
    }

    /// One line, for a chat message's title and an email's subject.
    pub fn headline(&self) -> String {
        let (imported, failed, held, open) = self.counts();
        format!(
            "comms-archiver: {failed} failed, {held} held, {open} day(s) open, {imported} imported{}",
            if self.needs_a_person() {
                " - needs attention"
            } else {
                ""
            }
        )
    }

    /// The readable digest. `personal` adds what only the admins' email may carry: the
    /// numbers and addresses of unmapped and silent users.
    pub fn text(&self, personal: bool) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{}\n", self.headline());
        for c in &self.connectors {
            for d in c.days.iter().filter(|d| d.needs_a_person()) {
                let _ = writeln!(
                    out,
                    "{} {}: {}, {} imported, {} failed, {} held",
                    c.connector,
                    d.day,
                    if d.complete { "complete" } else { "OPEN" },
                    d.imported,
                    d.failed,
                    d.held.values().sum::<u64>()
                );
                for (reason, n) in &d.failed_for_good {
                    let _ = writeln!(out, "  {n} failed for good: {reason}");
                }
                for (reason, n) in &d.held {
                    let _ = writeln!(
                        out,
                        "  {n} held ({reason}): delivered by the next wake or `redrive` once the cause is fixed"
                    );
                }
                for why in &d.open_because {
                    let _ = writeln!(out, "  open: {why}");
                }
                if let Some(e) = &d.reconciliation_error {
                    let _ = writeln!(out, "  the record does not add up: {e}");
                }
                if d.silent_source {
                    let _ = writeln!(
                        out,
                        "  no items, where its last days had some: is the partner delivering?"
                    );
                }
                match (personal, d.unmapped_users.len()) {
                    (_, 0) => {}
                    (true, _) => {
                        let _ = writeln!(out, "  unmapped users: {}", d.unmapped_users.join(", "));
                    }
                    (false, n) => {
                        let _ = writeln!(out, "  {n} unmapped user(s)");
                    }
                }
                let _ = writeln!(
                    out,
                    "  see: comms-archiver report --date {} --connector {}",
                    d.day, c.connector
                );
            }
            match (personal, c.silent_users.len()) {
                (_, 0) => {}
                (true, _) => {
                    let _ = writeln!(
                        out,
                        "{}: no copies lately for {}",
                        c.connector,
                        c.silent_users.join(", ")
                    );
                }
                (false, n) => {
                    let _ = writeln!(out, "{}: {n} mapped user(s) silent lately", c.connector);
                }
            }
        }
        out
    }

    /// The same as a small HTML document, for the email's HTML part.
    pub fn html(&self) -> String {
        let escaped = self
            .text(true)
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;");
        format!(
            "<!DOCTYPE html><html><body><h2>{}</h2><pre style=\"font-family:monospace\">{escaped}</pre></body></html>",
            self.headline().replace('&', "&amp;").replace('<', "&lt;")
        )
    }
}

/// Gathers the digest of `days` for the archiver's connectors: the days that a run since
/// `since` finished (or left open), from their reconciliations.
pub async fn gather(
    archiver: &Archiver,
    days: &[NaiveDate],
    since: DateTime<Utc>,
    settings: &AlertsConfig,
) -> Digest {
    let ledger = archiver.ledger();
    let mut digest = Digest {
        generated_at: Some(Utc::now()),
        connectors: Vec::new(),
    };
    for connector in archiver.connectors() {
        let name = connector.name.as_str();
        let mut part = ConnectorDigest {
            connector: name.to_string(),
            ..Default::default()
        };
        for &day in days {
            let mut d = DayDigest {
                day,
                ..Default::default()
            };
            match ledger.reconcile(name, day).await {
                Ok(Some(log)) if log.completed_at >= since || !log.complete => {
                    fill(&mut d, &log);
                    d.silent_source = log.complete
                        && log.available_from_source == 0
                        && settings.silent_source_items > 0
                        && usual_items(ledger, name, day).await
                            > settings.silent_source_items as f64;
                }
                Ok(_) => continue,
                Err(e) => d.reconciliation_error = Some(e.to_string()),
            }
            part.days.push(d);
        }
        if let (Some(table), Some(last)) = (connector.mapper.table(), days.iter().max()) {
            part.silent_users = silent_users(ledger, name, table, *last, settings).await;
        }
        if !part.days.is_empty() || !part.silent_users.is_empty() {
            digest.connectors.push(part);
        }
    }
    digest
}

fn fill(d: &mut DayDigest, log: &StatusLog) {
    d.complete = log.complete;
    d.imported = log.imported + log.partially_imported;
    d.failed = log.failed;
    for f in log.failures.iter().filter(|f| !f.reason.is_retried()) {
        *d.failed_for_good
            .entry(f.reason.as_str().to_string())
            .or_default() += 1;
    }
    d.open_because = log
        .errors
        .iter()
        .map(|e| format!("{}: {}", e.reason, e.detail))
        .collect();
    for h in &log.held_copies {
        *d.held.entry(h.reason.as_str().to_string()).or_default() += 1;
    }
    d.unmapped_users = log
        .unmapped_users
        .iter()
        .map(|u| format!("{u} ({} held)", log.held_for(u)))
        .collect();
}

/// Items a connector's complete days before `day` averaged (the last seven of them).
async fn usual_items(ledger: &Ledger, connector: &str, day: NaiveDate) -> f64 {
    let mut seen = Vec::new();
    for back in 1..=7 {
        let Some(earlier) = day.checked_sub_days(Days::new(back)) else {
            break;
        };
        if let Ok(Some(log)) = ledger.reconcile(connector, earlier).await {
            if log.complete {
                seen.push(log.available_from_source as f64);
            }
        }
    }
    match seen.len() {
        0 => 0.0,
        n => seen.iter().sum::<f64>() / n as f64,
    }
}

/// The CSV's identifiers whose mailbox got no copy of this connector on any of the last
/// `silent_user_days` days up to `last`, all of them complete (a day not complete, or not
/// processed, says nothing yet).
async fn silent_users(
    ledger: &Ledger,
    connector: &str,
    table: &crate::mapping::MappingTable,
    last: NaiveDate,
    settings: &AlertsConfig,
) -> Vec<String> {
    if settings.silent_user_days == 0 {
        return Vec::new();
    }
    let mut with_copies = BTreeSet::new();
    for back in 0..u64::from(settings.silent_user_days) {
        let Some(day) = last.checked_sub_days(Days::new(back)) else {
            return Vec::new();
        };
        if !ledger.is_complete(connector, day).await.unwrap_or(false) {
            return Vec::new();
        }
        let Ok(imported) = ledger
            .imported_for_day(connector, day, &BTreeSet::new())
            .await
        else {
            return Vec::new();
        };
        with_copies.extend(imported.copies().map(|c| c.mailbox.to_string()));
    }
    let at = last
        .and_hms_opt(12, 0, 0)
        .map(|t| t.and_utc())
        .unwrap_or_else(Utc::now);
    table
        .mapped_at(at)
        .into_iter()
        .filter(|(_, mailbox)| !with_copies.contains(*mailbox))
        .map(|(id, mailbox)| format!("{id} ({mailbox})"))
        .collect()
}

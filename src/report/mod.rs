//! The daily status log, modeled on the admin log of Microsoft's data connectors: per
//! connector per day, what was available, imported, skipped and failed, with every failure
//! listed. Its counts add up: available_for_import = imported + partially_imported +
//! skipped_duplicates + failed + held.

mod formats;
pub mod html;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A number with its noun, singular or plural: "1 copy", "2 copies".
pub fn counted(n: impl Into<u64>, one: &str, many: &str) -> String {
    let n = n.into();
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Why an item (or one copy of it) was not imported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// No participant maps to a valid mailbox, or the mailbox does not exist.
    UserMapping,
    /// The rendered message is larger than `max_item_bytes`.
    SizeExceeded,
    /// The partner's record could not be understood; the day stays open.
    InvalidPayload,
    /// The item could not be rendered as a message.
    RenderError,
    /// The mailbox refused the message for good.
    Rejected,
    /// The stage failed; the day stays open and the copy is retried.
    StageError,
    /// The mailbox was unavailable; the day stays open and the copy is retried.
    ImportError,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::UserMapping => "user_mapping",
            Reason::SizeExceeded => "size_exceeded",
            Reason::InvalidPayload => "invalid_payload",
            Reason::RenderError => "render_error",
            Reason::Rejected => "rejected",
            Reason::StageError => "stage_error",
            Reason::ImportError => "import_error",
        }
    }

    /// Whether a later run can cure it (the mapping fixed, the mailbox created, the limit
    /// raised): such a copy is held in the stage and re-driven, not failed.
    pub fn is_holdable(self) -> bool {
        matches!(
            self,
            Reason::UserMapping | Reason::Rejected | Reason::SizeExceeded
        )
    }

    /// Whether a later run retries the copy (the day is then not complete).
    pub fn is_retried(self) -> bool {
        matches!(
            self,
            Reason::InvalidPayload | Reason::StageError | Reason::ImportError
        )
    }
}

/// One failed item or copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The partner's item id (or the record's location when it had none).
    pub item_id: String,
    /// The participant the failure is about: the archived employee's number or address.
    pub source_user: String,
    /// The mailbox of the failed copy; None when no mailbox was found.
    pub mailbox: Option<String>,
    pub reason: Reason,
    /// What exactly happened, e.g. the rendered size.
    pub detail: String,
}

/// A copy kept in the stage until it can be delivered: it maps to no mailbox yet, or its
/// mailbox cannot take it now. `redrive` (and the daemon on each wake) delivers it once the
/// cause is gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    pub item_id: String,
    pub item_key: String,
    /// Whom the copy is for: the unmapped participant, or the archived employee.
    pub source_user: String,
    /// The mailbox that could not take it; None when the participant maps to none.
    pub mailbox: Option<String>,
    pub reason: Reason,
    pub detail: String,
    /// The catch-all mailbox (`mapping.unmapped_mailbox`) that holds a copy meanwhile; such
    /// a copy counts as imported there, and this one is not counted again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filed_in: Option<String>,
    /// The stage key of the held item.
    pub kept: String,
}

/// Where a re-drive delivered the copies of one held item (catch-all copies aside).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redriven {
    pub item_id: String,
    pub item_key: String,
    /// Mailboxes it was imported into by this run.
    pub delivered: Vec<String>,
    /// Mailboxes that held it already (imported by another run or another day).
    pub already: Vec<String>,
}

/// A file left out of an imported copy to bring it under `max_item_bytes`
/// (`archiver.oversize = "drop-attachments"`); it is kept whole in the stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeftOut {
    pub name: String,
    pub content_type: String,
    pub bytes: u64,
    pub sha256: String,
    /// The stage key of the file, exactly as the partner delivered it.
    pub kept: String,
}

/// A copy imported without some of its files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartialImport {
    pub item_id: String,
    pub mailbox: String,
    pub left_out: Vec<LeftOut>,
}

/// The status log of one connector for one day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusLog {
    pub connector: String,
    pub day: NaiveDate,
    /// When the run that wrote this log ended (UTC).
    pub completed_at: DateTime<Utc>,
    /// True when the day is finished and checkpointed; false when a later run retries it.
    pub complete: bool,
    /// Items the partner returned for the day.
    pub available_from_source: u64,
    /// Copies to import, after fan-out to every mapped participant (an item that maps to
    /// no one counts once).
    pub available_for_import: u64,
    pub imported: u64,
    /// Imported without some attachments, as the connectors' admin log counts them: copies
    /// over `max_item_bytes` with `archiver.oversize = "drop-attachments"`.
    pub partially_imported: u64,
    /// Copies already in the mailbox: imported by an earlier run, or repeated by the partner.
    pub skipped_duplicates: u64,
    pub failed: u64,
    pub failures: Vec<Failure>,
    /// Copies held in the stage for a later delivery (re-drive), catch-all copies aside.
    #[serde(default)]
    pub held: u64,
    /// Every held copy, with why, including those filed in the catch-all meanwhile.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held_copies: Vec<Held>,
    /// The copies imported without some of their files, and what was left out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partial_imports: Vec<PartialImport>,
    /// A re-drive's run log: where each held item's copies went.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redriven: Vec<Redriven>,
    /// Items the partner returned that the connector must not import (e.g. CellTrust A2P);
    /// they count in available_from_source, not in available_for_import.
    pub excluded: u64,
    pub exclusions: Vec<Exclusion>,
    /// Archived employees with no valid mailbox, once each.
    pub unmapped_users: Vec<String>,
    /// Problems that kept the whole day open (partner not ready, manifest mismatch, ...).
    pub errors: Vec<DayError>,
    /// Faults recovered from during this run (partner errors retried, mailbox connections
    /// replaced, throttling waited out), by side and kind.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub incidents: Vec<crate::incidents::Incident>,
    /// An earlier run started this day and did not finish it; this run checked the mailbox
    /// before importing anything that run might have imported.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resumed: bool,
    /// What stopped the earlier runs of this day, as their status logs said.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub earlier_errors: Vec<DayError>,
    /// Where this run imported, which its counts refer to: the store
    /// ([`crate::mailbox::Mailbox::destination`]) and the folder. A copy imported into
    /// another destination by an earlier run is not a duplicate here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    /// Copies imported, by how their mailbox was found (`mapping_csv`, `email_property`):
    /// each import record names the CSV line or the email property.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub mapped_by: BTreeMap<String, u64>,
    /// A run log's run: its id, when it ran, where, and what stopped it. None in the day's
    /// reconciliation, which is derived from every run's evidence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<RunInfo>,
    /// The dates of the items a run read (their import records are kept under them), so
    /// that the day's reconciliation finds them however late the partner delivered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub item_dates: Vec<NaiveDate>,
    /// The day's reconciliation: the runs it is derived from, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<String>,
    /// "No items ingested on YYYY-MM-DD" for an empty day.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub summary: Option<String>,
}

/// One run of a connector-day, as its run log records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunInfo {
    /// A run of the day's delivery, or a re-drive of its held copies.
    #[serde(default)]
    pub kind: RunKind,
    /// Unique among every run that ever writes the stage; import records name it too.
    pub id: String,
    pub started_at: DateTime<Utc>,
    pub ended_at: DateTime<Utc>,
    /// The host and process that ran it.
    pub host: String,
    /// The comms-archiver version that ran it.
    pub version: String,
    /// The store it imported into ([`crate::mailbox::Mailbox::destination`]) and the folder.
    pub destination: String,
    pub folder: String,
    /// What stopped the run before the day was done (the reasons of its day errors), if
    /// anything did.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stopped_by: Vec<String>,
    /// The runs of the day whose run logs the stage held when this run took the day: the
    /// runs it came after, whatever the clocks of the hosts that ran them say (the day's
    /// lease lets one run at a time have it). Absent in run logs written before it was
    /// recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follows: Option<Vec<String>>,
}

/// What a run did: read the partner's delivery of the day, or re-drive held copies. A
/// re-drive is never the base of the day's reconciliation: it did not read the delivery.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    #[default]
    Delivery,
    Redrive,
}

/// An item the connector must not import, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exclusion {
    pub item_id: String,
    pub reason: String,
    pub detail: String,
}

/// A problem with the day as a whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayError {
    pub reason: String,
    pub detail: String,
}

impl StatusLog {
    pub fn new(connector: &str, day: NaiveDate) -> Self {
        StatusLog {
            connector: connector.to_string(),
            day,
            completed_at: Utc::now(),
            complete: false,
            available_from_source: 0,
            available_for_import: 0,
            imported: 0,
            partially_imported: 0,
            skipped_duplicates: 0,
            failed: 0,
            failures: Vec::new(),
            held: 0,
            held_copies: Vec::new(),
            partial_imports: Vec::new(),
            redriven: Vec::new(),
            excluded: 0,
            exclusions: Vec::new(),
            unmapped_users: Vec::new(),
            errors: Vec::new(),
            incidents: Vec::new(),
            resumed: false,
            earlier_errors: Vec::new(),
            destination: None,
            mapped_by: BTreeMap::new(),
            run: None,
            item_dates: Vec::new(),
            runs: Vec::new(),
            summary: None,
        }
    }

    /// Whether the counts add up.
    pub fn adds_up(&self) -> bool {
        self.available_for_import
            == self.imported
                + self.partially_imported
                + self.skipped_duplicates
                + self.failed
                + self.held
            && self.failed == self.failures.len() as u64
            && self.held
                == self
                    .held_copies
                    .iter()
                    .filter(|h| h.filed_in.is_none())
                    .count() as u64
            && self.excluded == self.exclusions.len() as u64
    }

    /// Adds what delivering one shard of the day did (its copies' counts and lists, the
    /// errors that stopped it) to the day's log. A re-drive's entries are merged by item.
    pub fn absorb(&mut self, shard: StatusLog) {
        self.available_for_import += shard.available_for_import;
        self.imported += shard.imported;
        self.partially_imported += shard.partially_imported;
        self.skipped_duplicates += shard.skipped_duplicates;
        self.failed += shard.failed;
        self.failures.extend(shard.failures);
        self.held += shard.held;
        self.held_copies.extend(shard.held_copies);
        self.partial_imports.extend(shard.partial_imports);
        for (way, n) in shard.mapped_by {
            *self.mapped_by.entry(way).or_default() += n;
        }
        for user in shard.unmapped_users {
            if !self.unmapped_users.contains(&user) {
                self.unmapped_users.push(user);
            }
        }
        for went in shard.redriven {
            match self
                .redriven
                .iter_mut()
                .find(|r| r.item_key == went.item_key)
            {
                Some(entry) => {
                    entry.delivered.extend(went.delivered);
                    entry.already.extend(went.already);
                }
                None => self.redriven.push(went),
            }
        }
        self.errors.extend(shard.errors);
        self.incidents.extend(shard.incidents);
    }

    /// Records an excluded item.
    pub fn exclude(&mut self, exclusion: Exclusion) {
        self.excluded += 1;
        self.exclusions.push(exclusion);
    }

    /// Records a failed copy; it counts towards available_for_import.
    pub fn fail(&mut self, failure: Failure) {
        self.available_for_import += 1;
        self.failed += 1;
        self.failures.push(failure);
    }

    /// Records a held copy; it counts towards available_for_import unless the catch-all
    /// has it, where it counts as imported.
    pub fn hold(&mut self, held: Held) {
        if held.filed_in.is_none() {
            self.available_for_import += 1;
            self.held += 1;
        }
        self.held_copies.push(held);
    }

    /// How many copies are held for `user`.
    pub fn held_for(&self, user: &str) -> usize {
        self.held_copies
            .iter()
            .filter(|h| h.source_user == user || h.mailbox.as_deref() == Some(user))
            .count()
    }

    /// Notes the date of an item read (kept sorted, each once).
    pub fn note_item_date(&mut self, date: NaiveDate) {
        if let Err(at) = self.item_dates.binary_search(&date) {
            self.item_dates.insert(at, date);
        }
    }

    /// The reasons of what stopped the run, for one line.
    pub fn run_stops(&self) -> String {
        let reasons: Vec<&str> = self.errors.iter().map(|e| e.reason.as_str()).collect();
        reasons.join(", ")
    }

    /// Whether nothing in this log stops the day from being checkpointed.
    pub fn nothing_to_retry(&self) -> bool {
        self.errors.is_empty() && !self.failures.iter().any(|f| f.reason.is_retried())
    }

    /// Closes the log at the end of a run.
    pub fn finish(&mut self, complete: bool) {
        self.complete = complete;
        self.completed_at = Utc::now();
        self.summary = (self.available_from_source == 0 && self.errors.is_empty())
            .then(|| format!("No items ingested on {}", self.day.format("%Y-%m-%d")));
        debug_assert!(self.adds_up(), "status log does not add up: {self:?}");
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a status log always serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_and_csv_has_every_row() {
        let mut log = StatusLog::new("o2", NaiveDate::from_ymd_opt(2026, 11, 20).unwrap());
        log.available_from_source = 3;
        log.available_for_import = 2;
        log.imported = 1;
        log.skipped_duplicates = 1;
        log.fail(Failure {
            item_id: "A, \"quoted\"".into(),
            source_user: "+447700900199".into(),
            mailbox: None,
            reason: Reason::UserMapping,
            detail: "no mailbox".into(),
        });
        log.finish(true);
        assert!(log.adds_up());
        let csv = log.to_csv();
        let mut reader = csv::Reader::from_reader(csv.as_bytes());
        let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        assert_eq!(rows.len(), 2);
        // Times read as in the JSON.
        let json: serde_json::Value = serde_json::from_str(&log.to_json()).unwrap();
        assert_eq!(&rows[0][3], json["completed_at"].as_str().unwrap());
        assert_eq!(&rows[0][0], "summary");
        assert_eq!(&rows[0][6], "3");
        assert_eq!(&rows[1][11], "A, \"quoted\"");
        assert_eq!(&rows[1][14], "user_mapping");
        let back: StatusLog = serde_json::from_str(&log.to_json()).unwrap();
        assert_eq!(back, log);
    }

    #[test]
    fn empty_day_says_so() {
        let mut log = StatusLog::new("o2", NaiveDate::from_ymd_opt(2026, 11, 20).unwrap());
        log.finish(true);
        assert_eq!(
            log.summary.as_deref(),
            Some("No items ingested on 2026-11-20")
        );
        assert!(log.to_table().contains("No items ingested on 2026-11-20"));
    }
}

//! The ledger: what was imported where, the state of each connector-day, and checkpoints.
//! All of it is kept through the [`Stage`], next to the staged messages, so that the state
//! moves with the stage and not with the host.
//!
//! Keys in the stage:
//! - `staged/<connector>/<date>/<mailbox>/<item-key>.eml`: rendered messages (create-only),
//!   under the item's own date (UTC). Every import is preceded by this write, so the first run
//!   of any day to stage a copy knows that nothing imported it before: repeats across days
//!   (overlap windows, late deliveries) meet the same key.
//! - `ledger/<connector>/journal/<date>/<writer>-<n>.jsonl`: import records, one JSON line per
//!   imported copy, in batches (create-only) written after the mailbox accepted the messages,
//!   under the items' date ([`Journal`])
//! - `ledger/<connector>/days/<day>.json`: the day's state (open or complete, attempts)
//! - `ledger/<connector>/leases/<day>.json`: who is processing the day; taken and renewed
//!   with ETag conditions, so two daemons never collect one day at once, and taken over only
//!   once seen unrenewed for its whole life, whatever the daemons' clocks say; and
//!   `ledger/<connector>/leases/<day>/shard-<n>.json`, the same for one delivery shard
//! - `ledger/<connector>/collect/<day>/`: the day's index of staged copies by mailbox shard,
//!   and its delivery rounds ([`CollectIndex`], `collect.rs`)
//! - `runs/<connector>/<day>/<run>.json`: each run's own run log, written once when the run
//!   ends (create-only)
//! - `held/<connector>/<day>/<item-key>.json`: items with copies not delivered yet, kept
//!   whole for a re-drive (create-only, [`HeldItem`])
//! - `checkpoints/<connector>.json`: the last day up to which every day is complete
//! - `reports/<connector>/<day>.json` and `.csv`: the day's reconciliation, derived from the
//!   run logs and the journal and written again after every run (a view; `report`
//!   derives it anew)
//!
//! Evidence (staged messages, journal batches, run logs, held items) is written once and never rewritten
//! or deleted; what changes (day states, leases, checkpoints, the reconciliation's copy)
//! lives apart ([`crate::stage::is_evidence`]), so an immutability policy on the evidence
//! breaks nothing.

mod collect;
mod held;
mod journal;
mod lease;
mod reconcile;
mod runs;
mod session;
mod verify;

pub use collect::{shard_of, CollectIndex, Collected, Round, StagedCopy};
pub use held::{holding_bytes, HeldCopy, HeldItem};
pub use journal::{CopyPlace, Journal};
pub use lease::{owner_id, DayLease, DEFAULT_LEASE_SECS};
pub use reconcile::{DayCopy, DayImports};
pub use session::{DaySession, Finished, Opened, Place};
pub use verify::Verification;

use crate::item::ItemKey;
use crate::report::StatusLog;
use crate::stage::Stage;
use crate::{Error, Result};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::sync::Arc;

/// One imported copy, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportRecord {
    pub item_id: String,
    pub item_key: String,
    pub day: NaiveDate,
    /// The store the copy went into ([`crate::mailbox::Mailbox::destination`]): backend and
    /// server, tree or tenant. Absent in records written before destinations were recorded:
    /// such a copy is looked for in the mailbox before it is taken as imported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    pub mailbox: String,
    pub folder: String,
    /// Why the copy went to this mailbox: "mapping CSV <file> line <n>" or "email property".
    /// Absent in records written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mapped_by: Option<String>,
    /// The run that recorded it (absent in records written before runs were named).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    /// The stage key of the message that was imported.
    pub staged: String,
    /// The files left out of the copy to bring it under the size limit (partially
    /// imported), each kept whole in the stage.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub left_out: Vec<crate::report::LeftOut>,
    /// SHA-256 of the staged message, to verify the stage later.
    pub sha256: String,
    pub bytes: u64,
    pub imported_at: DateTime<Utc>,
}

/// Whether a connector-day is finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DayStatus {
    Open,
    Complete,
}

/// The recorded state of one connector-day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayState {
    pub status: DayStatus,
    pub attempts: u32,
    pub first_attempt_at: DateTime<Utc>,
    pub last_attempt_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    /// Whether every attempt at the day recorded its imports in the journal and staged under
    /// the items' dates (false for days begun by a version before the journal).
    #[serde(default)]
    pub journaled: bool,
}

/// What the earlier attempts at a day leave to the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Earlier {
    /// None: this is the first attempt.
    None,
    /// Earlier attempts kept the journal: a copy staged for the first time now was never
    /// imported.
    Journaled,
    /// An earlier attempt predates the journal: every copy is checked before it is imported.
    BeforeJournal,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Checkpoint {
    last_complete_day: NaiveDate,
}

/// Reads and writes the ledger through a stage.
#[derive(Clone)]
pub struct Ledger {
    stage: Arc<dyn Stage>,
    lease_ttl: chrono::Duration,
    /// Other daemons' leases as this process has seen them, for taking one over.
    seen: lease::Sightings,
}

impl Ledger {
    pub fn new(stage: Arc<dyn Stage>) -> Self {
        Ledger {
            stage,
            lease_ttl: chrono::Duration::seconds(DEFAULT_LEASE_SECS as i64),
            seen: Default::default(),
        }
    }

    /// The same ledger, leases and all, kept through another stage.
    pub fn on(&self, stage: Arc<dyn Stage>) -> Self {
        Ledger {
            stage,
            lease_ttl: self.lease_ttl,
            seen: self.seen.clone(),
        }
    }

    /// The same ledger with leases that last `secs` without renewal.
    pub fn with_lease_secs(mut self, secs: u64) -> Self {
        self.lease_ttl = chrono::Duration::seconds(secs.max(1) as i64);
        self
    }

    /// How often a lease is renewed while its work goes on: a tenth of its life.
    pub fn lease_renew_every(&self) -> std::time::Duration {
        (self.lease_ttl / 10)
            .to_std()
            .unwrap_or(std::time::Duration::from_secs(30))
    }

    /// Where a rendered copy is staged.
    pub fn staged_key(connector: &str, day: NaiveDate, mailbox: &str, key: &ItemKey) -> String {
        format!("staged/{connector}/{day}/{mailbox}/{key}.eml")
    }

    /// Where a file left out of a message (partially imported) is kept whole: by its item
    /// and its SHA-256, so every copy of the item shares it.
    pub fn file_key(connector: &str, day: NaiveDate, key: &ItemKey, sha256: &str) -> String {
        format!("staged/{connector}/{day}/files/{key}/{sha256}")
    }

    fn day_key(connector: &str, day: NaiveDate) -> String {
        format!("ledger/{connector}/days/{day}.json")
    }

    fn checkpoint_key(connector: &str) -> String {
        format!("checkpoints/{connector}.json")
    }

    /// Where a day's status log is kept, as `json` or `csv`.
    pub fn report_key(connector: &str, day: NaiveDate, extension: &str) -> String {
        format!("reports/{connector}/{day}.{extension}")
    }

    /// Where a run's own run log is kept.
    pub fn run_key(connector: &str, day: NaiveDate, run: &str) -> String {
        format!("runs/{connector}/{day}/{run}.json")
    }

    /// The import record a ledger written before the journal kept for the copy, if any.
    async fn legacy_record(
        &self,
        connector: &str,
        mailbox: &str,
        key: &ItemKey,
    ) -> Result<Option<ImportRecord>> {
        self.read(&format!("ledger/{connector}/imported/{mailbox}/{key}.json"))
            .await
    }

    /// A journal of the copies a run imports for the connector.
    pub fn journal(&self, connector: &str) -> Journal {
        Journal::new(self.clone(), connector)
    }

    /// Marks the start of an attempt at a day and says what earlier attempts left: they may
    /// have imported messages without recording them (the run is then recovering).
    pub async fn begin_day(&self, connector: &str, day: NaiveDate) -> Result<Earlier> {
        let now = Utc::now();
        let previous = self.day_state(connector, day).await?;
        let earlier = match &previous {
            None => Earlier::None,
            Some(s) if s.journaled => Earlier::Journaled,
            Some(_) => Earlier::BeforeJournal,
        };
        let state = match previous {
            Some(mut s) => {
                s.attempts += 1;
                s.last_attempt_at = now;
                s
            }
            None => DayState {
                status: DayStatus::Open,
                attempts: 1,
                first_attempt_at: now,
                last_attempt_at: now,
                completed_at: None,
                journaled: true,
            },
        };
        self.write(&Self::day_key(connector, day), &state).await?;
        Ok(earlier)
    }

    pub async fn day_state(&self, connector: &str, day: NaiveDate) -> Result<Option<DayState>> {
        self.read(&Self::day_key(connector, day)).await
    }

    /// Whether the day is complete.
    pub async fn is_complete(&self, connector: &str, day: NaiveDate) -> Result<bool> {
        Ok(self
            .day_state(connector, day)
            .await?
            .is_some_and(|s| s.status == DayStatus::Complete))
    }

    /// Marks a day complete and moves the checkpoint over every complete day that follows it.
    pub async fn complete_day(&self, connector: &str, day: NaiveDate) -> Result<()> {
        let key = Self::day_key(connector, day);
        let now = Utc::now();
        let mut state: DayState = self.read(&key).await?.unwrap_or(DayState {
            status: DayStatus::Open,
            attempts: 1,
            first_attempt_at: now,
            last_attempt_at: now,
            completed_at: None,
            journaled: true,
        });
        state.status = DayStatus::Complete;
        state.completed_at = Some(now);
        self.write(&key, &state).await?;

        // The checkpoint moves only over an unbroken run of complete days. Daemons working
        // on other days may move it at the same time: compare and swap.
        let key = Self::checkpoint_key(connector);
        for _ in 0..20 {
            let current = self.stage.get_versioned(&key).await?;
            let checkpoint = match &current {
                Some((raw, _)) => Some(
                    serde_json::from_slice::<Checkpoint>(raw)
                        .map_err(|e| Error::State(format!("{key} is unreadable: {e}")))?
                        .last_complete_day,
                ),
                None => None,
            };
            let mut last = match checkpoint {
                None => day,
                Some(c) if day == c.succ_opt().unwrap_or(c) => day,
                Some(c) => c,
            };
            while let Some(next) = last.succ_opt() {
                if !self.is_complete(connector, next).await? {
                    break;
                }
                last = next;
            }
            if checkpoint == Some(last) {
                return Ok(());
            }
            let bytes = serde_json::to_vec_pretty(&Checkpoint {
                last_complete_day: last,
            })
            .expect("a checkpoint serializes");
            let expected = current.as_ref().map(|(_, v)| v);
            if self.stage.put_if(&key, &bytes, expected).await?.is_some() {
                return Ok(());
            }
        }
        Err(Error::State(format!(
            "{key} kept changing while it was updated; the next run moves it"
        )))
    }

    /// The last day up to which every day is complete, if any day is.
    pub async fn checkpoint(&self, connector: &str) -> Result<Option<NaiveDate>> {
        Ok(self
            .read::<Checkpoint>(&Self::checkpoint_key(connector))
            .await?
            .map(|c| c.last_complete_day))
    }

    /// Every import record in the journal batches of one date.
    pub async fn import_records(
        &self,
        connector: &str,
        date: NaiveDate,
    ) -> Result<Vec<ImportRecord>> {
        let mut records = Vec::new();
        for batch in self.import_batches(connector, date).await? {
            records.extend(self.read_batch(&batch).await?);
        }
        Ok(records)
    }

    /// The journal batches of the copies of `date`, in order.
    async fn import_batches(&self, connector: &str, date: NaiveDate) -> Result<Vec<String>> {
        let mut batches = self.stage.list(&Journal::prefix(connector, date)).await?;
        batches.sort();
        Ok(batches)
    }

    /// The records of one journal batch.
    async fn read_batch(&self, key: &str) -> Result<Vec<ImportRecord>> {
        let Some(bytes) = self.stage.get(key).await? else {
            return Ok(Vec::new());
        };
        let unreadable = |line: usize, why: String| {
            Error::State(format!(
                "{} holds an unreadable '{key}' (line {line}: {why}); restore it from backup, \
                 or remove it and the copies it recorded are checked in their mailboxes",
                self.stage.describe()
            ))
        };
        let text = std::str::from_utf8(&bytes).map_err(|e| unreadable(1, e.to_string()))?;
        text.lines()
            .enumerate()
            .filter(|(_, line)| !line.is_empty())
            .map(|(i, line)| {
                serde_json::from_str(line).map_err(|e| unreadable(i + 1, e.to_string()))
            })
            .collect()
    }

    /// Stores a status log as JSON and CSV.
    pub async fn write_report(&self, log: &StatusLog) -> Result<()> {
        self.stage
            .put(
                &Self::report_key(&log.connector, log.day, "json"),
                log.to_json().as_bytes(),
            )
            .await?;
        self.stage
            .put(
                &Self::report_key(&log.connector, log.day, "csv"),
                log.to_csv().as_bytes(),
            )
            .await?;
        Ok(())
    }

    pub async fn read_report(&self, connector: &str, day: NaiveDate) -> Result<Option<StatusLog>> {
        self.read(&Self::report_key(connector, day, "json")).await
    }

    async fn read<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        match self.stage.get(key).await? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                Error::State(format!(
                    "{} holds an unreadable '{key}': {e}; restore it from backup or remove it \
                     to let the next run rebuild it",
                    self.stage.describe()
                ))
            }),
        }
    }

    async fn write<T: Serialize>(&self, key: &str, value: &T) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(value).expect("ledger values always serialize");
        self.stage.put(key, &bytes).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stage::LocalStage;

    fn d(day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, day).unwrap()
    }

    #[tokio::test]
    async fn checkpoint_moves_only_over_complete_days() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::new(Arc::new(LocalStage::new(dir.path())));
        assert_eq!(ledger.checkpoint("o2").await.unwrap(), None);
        assert_eq!(ledger.begin_day("o2", d(17)).await.unwrap(), Earlier::None);
        ledger.complete_day("o2", d(17)).await.unwrap();
        assert_eq!(ledger.checkpoint("o2").await.unwrap(), Some(d(17)));

        // 19 completes before 18: the checkpoint waits for 18, then jumps over both.
        ledger.complete_day("o2", d(19)).await.unwrap();
        assert_eq!(ledger.checkpoint("o2").await.unwrap(), Some(d(17)));
        assert_eq!(ledger.begin_day("o2", d(18)).await.unwrap(), Earlier::None);
        assert_eq!(
            ledger.begin_day("o2", d(18)).await.unwrap(),
            Earlier::Journaled,
            "second attempt recovers"
        );
        ledger.complete_day("o2", d(18)).await.unwrap();
        assert_eq!(ledger.checkpoint("o2").await.unwrap(), Some(d(19)));
        assert_eq!(
            ledger
                .day_state("o2", d(18))
                .await
                .unwrap()
                .unwrap()
                .attempts,
            2
        );
    }

    #[tokio::test]
    async fn a_day_begun_before_the_journal_is_checked_copy_by_copy() {
        let dir = tempfile::tempdir().unwrap();
        let stage: Arc<dyn Stage> = Arc::new(LocalStage::new(dir.path()));
        let ledger = Ledger::new(stage.clone());
        let old = br#"{"status":"open","attempts":1,"first_attempt_at":"2026-11-21T04:00:00Z","last_attempt_at":"2026-11-21T04:00:00Z","completed_at":null}"#;
        stage
            .put("ledger/o2/days/2026-11-20.json", old)
            .await
            .unwrap();
        assert_eq!(
            ledger.begin_day("o2", d(20)).await.unwrap(),
            Earlier::BeforeJournal
        );
        assert_eq!(
            ledger.begin_day("o2", d(20)).await.unwrap(),
            Earlier::BeforeJournal,
            "until the day is complete"
        );
        assert_eq!(
            ledger
                .day_state("o2", d(20))
                .await
                .unwrap()
                .unwrap()
                .attempts,
            3
        );
    }
}

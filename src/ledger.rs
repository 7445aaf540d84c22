//! The ledger: what was imported where, the state of each connector-day, and checkpoints.
//! All of it is kept through the [`Stage`], next to the staged messages, so that the state
//! moves with the stage and not with the host.
//!
//! Keys in the stage:
//! - `staged/<connector>/<day>/<mailbox>/<item-key>.eml`: rendered messages (create-only)
//! - `ledger/<connector>/imported/<mailbox>/<item-key>.json`: one per imported copy
//!   (create-only), written after the mailbox accepted the message
//! - `ledger/<connector>/days/<day>.json`: the day's state (open or complete, attempts)
//! - `checkpoints/<connector>.json`: the last day up to which every day is complete
//! - `reports/<connector>/<day>.json` and `.csv`: the day's status log

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
    pub mailbox: String,
    pub folder: String,
    /// The stage key of the message that was imported.
    pub staged: String,
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
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Checkpoint {
    last_complete_day: NaiveDate,
}

/// Reads and writes the ledger through a stage.
#[derive(Clone)]
pub struct Ledger {
    stage: Arc<dyn Stage>,
}

impl Ledger {
    pub fn new(stage: Arc<dyn Stage>) -> Self {
        Ledger { stage }
    }

    pub fn stage(&self) -> &Arc<dyn Stage> {
        &self.stage
    }

    /// Where a rendered copy is staged.
    pub fn staged_key(connector: &str, day: NaiveDate, mailbox: &str, key: &ItemKey) -> String {
        format!("staged/{connector}/{day}/{mailbox}/{key}.eml")
    }

    fn import_key(connector: &str, mailbox: &str, key: &ItemKey) -> String {
        format!("ledger/{connector}/imported/{mailbox}/{key}.json")
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

    /// Whether this copy of the item was imported into this mailbox by any earlier run.
    pub async fn is_imported(&self, connector: &str, mailbox: &str, key: &ItemKey) -> Result<bool> {
        Ok(self
            .stage
            .exists(&Self::import_key(connector, mailbox, key))
            .await?)
    }

    /// Records an imported copy. Recording it twice is harmless.
    pub async fn record_import(&self, connector: &str, record: &ImportRecord) -> Result<()> {
        let key = ItemKey::from_hex(&record.item_key);
        let bytes = serde_json::to_vec(record).expect("a record always serializes");
        self.stage
            .put_new(&Self::import_key(connector, &record.mailbox, &key), &bytes)
            .await?;
        Ok(())
    }

    /// The imported-copy record, if any.
    pub async fn import_record(
        &self,
        connector: &str,
        mailbox: &str,
        key: &ItemKey,
    ) -> Result<Option<ImportRecord>> {
        self.read(&Self::import_key(connector, mailbox, key)).await
    }

    /// Marks the start of an attempt at a day. Returns true when an earlier attempt exists,
    /// which may have imported messages without recording them (the run is then recovering).
    pub async fn begin_day(&self, connector: &str, day: NaiveDate) -> Result<bool> {
        let now = Utc::now();
        let previous = self.day_state(connector, day).await?;
        let recovering = previous.is_some();
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
            },
        };
        self.write(&Self::day_key(connector, day), &state).await?;
        Ok(recovering)
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
        });
        state.status = DayStatus::Complete;
        state.completed_at = Some(now);
        self.write(&key, &state).await?;

        // The checkpoint moves only over an unbroken run of complete days.
        let mut last = match self.checkpoint(connector).await? {
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
        if self.checkpoint(connector).await? != Some(last) {
            self.write(
                &Self::checkpoint_key(connector),
                &Checkpoint {
                    last_complete_day: last,
                },
            )
            .await?;
        }
        Ok(())
    }

    /// The last day up to which every day is complete, if any day is.
    pub async fn checkpoint(&self, connector: &str) -> Result<Option<NaiveDate>> {
        Ok(self
            .read::<Checkpoint>(&Self::checkpoint_key(connector))
            .await?
            .map(|c| c.last_complete_day))
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
        assert!(!ledger.begin_day("o2", d(17)).await.unwrap());
        ledger.complete_day("o2", d(17)).await.unwrap();
        assert_eq!(ledger.checkpoint("o2").await.unwrap(), Some(d(17)));

        // 19 completes before 18: the checkpoint waits for 18, then jumps over both.
        ledger.complete_day("o2", d(19)).await.unwrap();
        assert_eq!(ledger.checkpoint("o2").await.unwrap(), Some(d(17)));
        assert!(!ledger.begin_day("o2", d(18)).await.unwrap());
        assert!(
            ledger.begin_day("o2", d(18)).await.unwrap(),
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
}

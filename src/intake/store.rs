//! Where the intake keeps what it accepts, in the stage, before it answers 250:
//!
//! - each message, create-only, at `intake/<connector>/<day>/messages/<item-key>.eml`
//!   (evidence: written once, never rewritten), keyed by the partner's id so that a message
//!   sent twice is kept once;
//! - the acceptance records, `intake/<connector>/<day>/accepted/<batch>.json`, each listing
//!   the messages of one group commit with their SHA-256: how many messages the intake
//!   acknowledged for the day, which the day's run reconciles against.
//!
//! A local stage syncs each file and its directory; an Azure stage commits each blob. The
//! day is the UTC date of the message's time, unless that day is already complete: then the
//! first later day still open. A day before the daemon's catch-up window, which its wakes
//! would not reach, is noted (`ledger/<connector>/intake-behind/<day>.json`) and run at
//! the next wake: nothing waits where no one looks.

use crate::item::{sha256_hex, ItemKey};
use crate::ledger::Ledger;
use crate::stage::{Created, Stage};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// One acknowledged message, as its acceptance record lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    /// The item key the message is kept under.
    pub key: String,
    pub sha256: String,
    pub bytes: u64,
    pub received_at: DateTime<Utc>,
    /// The day the message belongs to, when it came after that day was complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub late_for: Option<NaiveDate>,
}

/// One group commit's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AcceptanceRecord {
    pub accepted: Vec<Accepted>,
}

/// The stage keys of a connector-day's intake.
pub fn messages_prefix(connector: &str, day: NaiveDate) -> String {
    format!("intake/{connector}/{day}/messages/")
}

pub fn records_prefix(connector: &str, day: NaiveDate) -> String {
    format!("intake/{connector}/{day}/accepted/")
}

/// State: a day behind the connector's checkpoint that holds intake messages.
fn pending_key(connector: &str, day: NaiveDate) -> String {
    format!("ledger/{connector}/intake-behind/{day}.json")
}

/// The days behind the connector's checkpoint that hold messages of the intake: the daemon
/// runs them at its next wake, as it does the days of its window.
pub async fn days_behind(stage: &dyn Stage, connector: &str) -> Result<Vec<NaiveDate>, String> {
    let prefix = format!("ledger/{connector}/intake-behind/");
    let mut days: Vec<NaiveDate> = stage
        .list(&prefix)
        .await
        .map_err(|e| e.to_string())?
        .iter()
        .filter_map(|k| k.strip_prefix(&prefix)?.strip_suffix(".json")?.parse().ok())
        .collect();
    days.sort();
    Ok(days)
}

pub fn message_key(connector: &str, day: NaiveDate, key: &str) -> String {
    format!("{}{key}.eml", messages_prefix(connector, day))
}

/// Whether the message was new to the intake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kept {
    New,
    /// A message of the same id was kept before (a retry after a lost reply).
    Again,
}

struct Pending {
    connector: String,
    day: NaiveDate,
    entry: Accepted,
    done: oneshot::Sender<Result<(), String>>,
}

/// Keeps accepted messages durably; cheap to clone.
#[derive(Clone)]
pub struct Keeper {
    stage: Arc<dyn Stage>,
    ledger: Arc<Ledger>,
    records: mpsc::Sender<Pending>,
    /// `schedule.catch_up_days`, which with the checkpoint says where the daemon's window
    /// starts.
    catch_up_days: u32,
    /// Connector-days already checked by [`Keeper::note_if_behind`].
    noted: Arc<std::sync::Mutex<std::collections::HashSet<(String, NaiveDate)>>>,
}

impl Keeper {
    pub fn new(stage: Arc<dyn Stage>, catch_up_days: u32) -> Keeper {
        let (records, pending) = mpsc::channel(4096);
        tokio::spawn(commit_records(stage.clone(), pending));
        Keeper {
            ledger: Arc::new(Ledger::new(stage.clone())),
            stage,
            records,
            catch_up_days,
            noted: Default::default(),
        }
    }

    /// Keeps one message of `connector`, whose partner id is `id` and whose time is `time`,
    /// and records it: when this returns Ok the message is durable and counted.
    pub async fn keep(
        &self,
        connector: &str,
        id: &str,
        time: DateTime<Utc>,
        bytes: &[u8],
    ) -> Result<Kept, String> {
        let key = ItemKey::new(connector, id).as_str().to_string();
        let today = Utc::now().date_naive();
        let own_day = time.date_naive().min(today);
        let mut day = self.open_day(connector, own_day, today).await?;
        let mut kept = None;
        loop {
            let stored = message_key(connector, day, &key);
            let created = self
                .stage
                .put_new(&stored, bytes)
                .await
                .map_err(|e| e.to_string())?;
            kept.get_or_insert(match created {
                Created::New => Kept::New,
                Created::AlreadyExists => Kept::Again,
            });
            // What is recorded is what is kept: a second message of the same id keeps the
            // first one's bytes.
            let (sha256, size) = match created {
                Created::New => (sha256_hex(bytes), bytes.len() as u64),
                Created::AlreadyExists => {
                    let first = self
                        .stage
                        .get(&stored)
                        .await
                        .map_err(|e| e.to_string())?
                        .ok_or_else(|| format!("{stored} exists but cannot be read"))?;
                    if first != bytes {
                        tracing::warn!(
                            connector,
                            day = %day,
                            "a second message with the id of one kept before differs from it; \
                             the first is kept"
                        );
                    }
                    (sha256_hex(&first), first.len() as u64)
                }
            };
            let entry = Accepted {
                key: key.clone(),
                sha256,
                bytes: size,
                received_at: Utc::now(),
                late_for: (day != own_day).then_some(own_day),
            };
            self.record(connector, day, entry).await?;
            self.note_if_behind(connector, day).await?;
            // A day that became complete while the message was kept, or that a run is
            // collecting and delivering now, may not have read it: it is kept again in the
            // next open day too (the journal imports it once).
            let busy = day < today
                && self
                    .ledger
                    .is_leased(connector, day)
                    .await
                    .map_err(|e| e.to_string())?;
            if day >= today || (!busy && !self.is_complete(connector, day).await?) {
                return Ok(kept.unwrap_or(Kept::New));
            }
            let after = match busy {
                true => day.succ_opt().unwrap_or(today),
                false => day,
            };
            day = self.open_day(connector, after, today).await?;
        }
    }

    /// `day`, or the first day after it that is not complete (today at the latest).
    async fn open_day(
        &self,
        connector: &str,
        mut day: NaiveDate,
        today: NaiveDate,
    ) -> Result<NaiveDate, String> {
        while day < today && self.is_complete(connector, day).await? {
            day = day.succ_opt().unwrap_or(today);
        }
        Ok(day)
    }

    /// Notes `day` as one the daemon must read although its wakes would not reach it: before
    /// the first day its catch-up window starts at now (`scheduler::days_due`), which only
    /// moves forward. Once per connector-day and process.
    async fn note_if_behind(&self, connector: &str, day: NaiveDate) -> Result<(), String> {
        if self
            .noted
            .lock()
            .expect("not poisoned")
            .contains(&(connector.to_string(), day))
        {
            return Ok(());
        }
        let checkpoint = self
            .ledger
            .checkpoint(connector)
            .await
            .map_err(|e| e.to_string())?;
        let today = Utc::now().date_naive();
        let window = crate::scheduler::days_due(today, checkpoint, self.catch_up_days);
        if day < window.first().copied().unwrap_or(today) {
            self.stage
                .put(&pending_key(connector, day), b"{}")
                .await
                .map_err(|e| e.to_string())?;
        }
        self.noted
            .lock()
            .expect("not poisoned")
            .insert((connector.to_string(), day));
        Ok(())
    }

    async fn is_complete(&self, connector: &str, day: NaiveDate) -> Result<bool, String> {
        self.ledger
            .is_complete(connector, day)
            .await
            .map_err(|e| e.to_string())
    }

    async fn record(&self, connector: &str, day: NaiveDate, entry: Accepted) -> Result<(), String> {
        let (done, answer) = oneshot::channel();
        let pending = Pending {
            connector: connector.to_string(),
            day,
            entry,
            done,
        };
        self.records
            .send(pending)
            .await
            .map_err(|_| "the intake's recorder has stopped".to_string())?;
        answer
            .await
            .map_err(|_| "the intake's recorder has stopped".to_string())?
    }
}

/// The group commit: every message waiting is listed in one record per connector-day.
async fn commit_records(stage: Arc<dyn Stage>, mut pending: mpsc::Receiver<Pending>) {
    static BATCH: AtomicU64 = AtomicU64::new(0);
    while let Some(first) = pending.recv().await {
        let mut batch = vec![first];
        while batch.len() < 1000 {
            match pending.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let mut groups: BTreeMap<(String, NaiveDate), Vec<Pending>> = BTreeMap::new();
        for p in batch {
            groups
                .entry((p.connector.clone(), p.day))
                .or_default()
                .push(p);
        }
        let writes = groups.into_iter().map(|((connector, day), group)| {
            let stage = stage.clone();
            async move {
                let record = AcceptanceRecord {
                    accepted: group.iter().map(|p| p.entry.clone()).collect(),
                };
                let name = format!(
                    "{}{}-{}-{}.json",
                    records_prefix(&connector, day),
                    Utc::now().format("%Y%m%dT%H%M%S%.6f"),
                    std::process::id(),
                    BATCH.fetch_add(1, Ordering::Relaxed)
                );
                let bytes = serde_json::to_vec(&record).expect("records serialize");
                let outcome = match stage.put_new(&name, &bytes).await {
                    Ok(Created::New) => Ok(()),
                    Ok(Created::AlreadyExists) => {
                        Err(format!("the acceptance record {name} exists already"))
                    }
                    Err(e) => Err(e.to_string()),
                };
                for p in group {
                    let _ = p.done.send(outcome.clone());
                }
            }
        });
        futures::future::join_all(writes).await;
    }
}

/// What a connector-day's intake holds: the messages kept and the acceptance records.
#[derive(Debug, Default)]
pub struct DayIntake {
    /// Every recorded message, by item key (a message recorded twice is one).
    pub recorded: BTreeMap<String, Accepted>,
    /// Every message kept, by item key.
    pub kept: Vec<String>,
}

/// Reads a connector-day's intake.
pub async fn read_day(
    stage: &dyn Stage,
    connector: &str,
    day: NaiveDate,
) -> Result<DayIntake, String> {
    let mut intake = DayIntake::default();
    let mut records = stage
        .list(&records_prefix(connector, day))
        .await
        .map_err(|e| e.to_string())?;
    records.sort();
    for name in records {
        let bytes = stage
            .get(&name)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{name} was listed but cannot be read"))?;
        let record: AcceptanceRecord = serde_json::from_slice(&bytes)
            .map_err(|e| format!("{name} is no acceptance record: {e}"))?;
        for entry in record.accepted {
            intake.recorded.entry(entry.key.clone()).or_insert(entry);
        }
    }
    let prefix = messages_prefix(connector, day);
    let mut kept: Vec<String> = stage
        .list(&prefix)
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter_map(|k| {
            k.strip_prefix(&prefix)
                .and_then(|n| n.strip_suffix(".eml"))
                .map(str::to_string)
        })
        .collect();
    kept.sort();
    intake.kept = kept;
    Ok(intake)
}

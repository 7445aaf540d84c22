//! The day protocol. Opening a connector-day takes its lease, records the attempt and reads
//! what earlier runs left; the [`DaySession`] then keeps the lease, records imports through
//! its journal, and finishes the day in the one order that keeps "nothing lost, nothing
//! twice": the journal is flushed before the day is judged, the run's own run log is written
//! (once) before the day is marked complete, the day before the checkpoint moves, then the
//! day's reconciliation is derived from every run, and the lease is let go last, whatever
//! happened before.

use super::{DayLease, Earlier, Journal, Ledger};
use crate::report::{DayError, RunInfo, RunKind, StatusLog};
use crate::Result;
use chrono::NaiveDate;
use std::time::Instant;

/// What opening a day found.
pub enum Opened {
    /// The day is this run's until the session finishes.
    Session(Box<DaySession>),
    /// Another live daemon holds the day: its lease holder and expiry, for the status log.
    Busy(String),
}

/// One run's hold on one connector-day.
pub struct DaySession {
    ledger: Ledger,
    connector: String,
    day: NaiveDate,
    /// The lease and when it was last renewed; renewed while copies that borrow the
    /// journal are in flight, hence behind a lock.
    hold: tokio::sync::Mutex<(DayLease, Instant)>,
    earlier: Earlier,
    earlier_errors: Vec<DayError>,
    journal: std::sync::Arc<Journal>,
    started_at: chrono::DateTime<chrono::Utc>,
    /// The daemon whose lease this run took over, when it had stopped renewing it.
    taken_from: Option<String>,
    /// The runs of the day that had written their logs when this run took the day.
    follows: Vec<String>,
}

/// Where a run imported: the store ([`crate::mailbox::Mailbox::destination`]) and the
/// folder; its run log records it, and the day's reconciliation counts the copies there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub destination: String,
    pub folder: String,
}

/// How a finished session left the day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// Nothing is left to retry; the day is marked complete.
    pub complete: bool,
    /// The status log was written (not when the lease was lost: the day is another's).
    pub reported: bool,
    /// The connector's checkpoint after the day, when any day is complete.
    pub checkpoint: Option<NaiveDate>,
}

impl Ledger {
    /// Opens `day` of `connector` for this process: its lease, the attempt, the errors of
    /// unfinished earlier runs, and a fresh journal.
    pub async fn open_day(&self, connector: &str, day: NaiveDate) -> Result<Opened> {
        let lease = match self.acquire_day(connector, day, &super::owner_id()).await? {
            Ok(lease) => lease,
            Err(busy) => return Ok(Opened::Busy(busy)),
        };
        let begun = async {
            let earlier = self.begin_day(connector, day).await?;
            Ok::<_, crate::Error>((earlier, self.logged_runs(connector, day).await?))
        };
        match begun.await {
            Ok((earlier, follows)) => {
                tracing::debug!(connector, day = %day, ?earlier, "day lease taken");
                // What stopped the earlier runs of this day, kept in this run's log.
                let earlier_errors = match self.read_report(connector, day).await {
                    Ok(Some(log)) if !log.complete => {
                        let mut errors = log.earlier_errors;
                        errors.extend(log.errors.into_iter().filter(|e| e.reason != "busy"));
                        errors
                    }
                    _ => Vec::new(),
                };
                let taken_from = lease.taken_from().map(str::to_string);
                Ok(Opened::Session(Box::new(DaySession {
                    taken_from,
                    follows,
                    ledger: self.clone(),
                    connector: connector.to_string(),
                    day,
                    hold: tokio::sync::Mutex::new((lease, Instant::now())),
                    earlier,
                    earlier_errors,
                    journal: std::sync::Arc::new(self.journal(connector)),
                    started_at: chrono::Utc::now(),
                })))
            }
            Err(e) => {
                let _ = self.release(lease).await;
                Err(e)
            }
        }
    }
}

impl DaySession {
    pub fn connector(&self) -> &str {
        &self.connector
    }

    pub fn day(&self) -> NaiveDate {
        self.day
    }

    /// The daemon whose lease of the day this run took over, when it had stopped renewing
    /// it (crashed, or cut off from the stage) rather than let the day go.
    pub fn taken_from(&self) -> Option<&str> {
        self.taken_from.as_deref()
    }

    /// What the earlier attempts at the day left.
    pub fn earlier(&self) -> Earlier {
        self.earlier
    }

    /// Whether an earlier attempt may have imported copies it did not record.
    pub fn recovering(&self) -> bool {
        self.earlier != Earlier::None
    }

    /// Where this run records the copies it imports.
    pub fn journal(&self) -> &std::sync::Arc<Journal> {
        &self.journal
    }

    /// Renews the lease when it is due; false once it is lost (another daemon took the day
    /// over after it expired): the run must stop taking records.
    pub async fn keep(&self) -> Result<bool> {
        let mut hold = self.hold.lock().await;
        let (lease, renewed_at) = &mut *hold;
        if renewed_at.elapsed() < self.ledger.lease_renew_every() {
            return Ok(true);
        }
        *renewed_at = Instant::now();
        self.ledger.renew(lease).await
    }

    /// Finishes the day with this run's log: flushes the journal (a failure is an error of
    /// the day, which then stays open), judges the day, writes the status log, marks the day
    /// complete and moves the checkpoint when nothing is left to retry, and lets the lease go.
    /// A day whose lease was lost is left to its new holder, report included.
    pub async fn finish(self, log: &mut StatusLog, place: &Place) -> Result<Finished> {
        self.finish_as(log, place, RunKind::Delivery).await
    }

    /// Finishes a run of `kind`. A re-drive leaves the day's state and the checkpoint as
    /// they are (it only runs on a complete day) and writes its run log and the day's
    /// reconciliation.
    pub async fn finish_as(
        self,
        log: &mut StatusLog,
        place: &Place,
        kind: RunKind,
    ) -> Result<Finished> {
        let DaySession {
            ledger,
            connector,
            day,
            hold,
            earlier,
            earlier_errors,
            journal,
            started_at,
            taken_from: _,
            follows,
        } = self;
        let (lease, _) = hold.into_inner();
        let result = async {
            if let Err(e) = journal.flush().await {
                log.errors.push(DayError {
                    reason: "stage_unavailable".into(),
                    detail: format!(
                        "the ledger could not record imported copies ({e}); the next run \
                         checks the mailbox before importing them again"
                    ),
                });
            }
            let redrive = kind == RunKind::Redrive;
            log.resumed = earlier != Earlier::None && !redrive;
            log.earlier_errors = if redrive { Vec::new() } else { earlier_errors };
            let complete = log.nothing_to_retry();
            log.finish(complete);
            log.run = Some(RunInfo {
                kind,
                id: journal.run_id().to_string(),
                started_at,
                ended_at: log.completed_at,
                host: super::owner_id(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                destination: place.destination.clone(),
                folder: place.folder.clone(),
                stopped_by: log.errors.iter().map(|e| e.reason.clone()).collect(),
                follows: Some(follows),
            });
            // The run's own record, whatever else happens: evidence, written once.
            ledger.write_run_log(log).await?;
            if log.errors.iter().any(|e| e.reason == "lease_lost") {
                return Ok(Finished {
                    complete,
                    reported: false,
                    checkpoint: None,
                });
            }
            let checkpoint = match complete && !redrive {
                true => {
                    ledger.complete_day(&connector, day).await?;
                    ledger.checkpoint(&connector).await?
                }
                false => None,
            };
            // The day as a whole, derived from every run, kept where `report` finds it.
            if let Some(day_log) = ledger.reconcile(&connector, day).await? {
                ledger.write_report(&day_log).await?;
            }
            Ok(Finished {
                complete,
                reported: true,
                checkpoint,
            })
        }
        .await;
        release(&ledger, lease, &connector, day).await;
        result
    }

    /// Lets the day go without finishing it (the run failed outright): it stays open.
    pub async fn abandon(self) {
        let (lease, _) = self.hold.into_inner();
        release(&self.ledger, lease, &self.connector, self.day).await;
    }
}

/// Gives the lease up, so that the next run need not wait for it to expire.
async fn release(ledger: &Ledger, lease: DayLease, connector: &str, day: NaiveDate) {
    if let Err(e) = ledger.release(lease).await {
        tracing::warn!(connector, day = %day, error = %e,
            "could not release the day's lease; it expires on its own");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{CopyPlace, DayStatus, ImportRecord};
    use crate::stage::{Created, LocalStage, Stage, StageError, Version};
    use async_trait::async_trait;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    /// A local stage whose journal writes fail while `down` is set.
    struct JournalDown {
        inner: LocalStage,
        down: AtomicBool,
    }

    impl JournalDown {
        fn refuse(&self, key: &str) -> Result<(), StageError> {
            match self.down.load(Ordering::SeqCst) && key.contains("/journal/") {
                true => Err(StageError {
                    stage: "test".into(),
                    operation: "put",
                    key: key.into(),
                    message: "down".into(),
                }),
                false => Ok(()),
            }
        }
    }

    #[async_trait]
    impl Stage for JournalDown {
        async fn put_new(&self, key: &str, bytes: &[u8]) -> Result<Created, StageError> {
            self.refuse(key)?;
            self.inner.put_new(key, bytes).await
        }
        async fn put(&self, key: &str, bytes: &[u8]) -> Result<(), StageError> {
            self.refuse(key)?;
            self.inner.put(key, bytes).await
        }
        async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StageError> {
            self.inner.get(key).await
        }
        async fn get_versioned(&self, key: &str) -> Result<Option<(Vec<u8>, Version)>, StageError> {
            self.inner.get_versioned(key).await
        }
        async fn put_if(
            &self,
            key: &str,
            bytes: &[u8],
            expected: Option<&Version>,
        ) -> Result<Option<Version>, StageError> {
            self.inner.put_if(key, bytes, expected).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<String>, StageError> {
            self.inner.list(prefix).await
        }
        fn describe(&self) -> String {
            "test stage".into()
        }
    }

    fn here() -> Place {
        Place {
            destination: "maildir /m".into(),
            folder: "F".into(),
        }
    }

    fn day(n: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, n).unwrap()
    }

    fn record(key: &str) -> ImportRecord {
        ImportRecord {
            item_id: "id".into(),
            item_key: key.into(),
            day: day(20),
            destination: Some("maildir /m".into()),
            mailbox: "alice@contoso.com".into(),
            folder: "F".into(),
            mapped_by: Some("email property".into()),
            run: None,
            staged: "staged/o2/x.eml".into(),
            sha256: "00".into(),
            bytes: 1,
            left_out: Vec::new(),
            imported_at: chrono::Utc::now(),
        }
    }

    fn place(key: &str) -> CopyPlace {
        CopyPlace {
            destination: "maildir /m".into(),
            mailbox: "alice@contoso.com".into(),
            folder: "F".into(),
            item_key: key.into(),
        }
    }

    async fn open(ledger: &Ledger, n: u32) -> Box<DaySession> {
        match ledger.open_day("o2", day(n)).await.unwrap() {
            Opened::Session(session) => session,
            Opened::Busy(why) => panic!("busy: {why}"),
        }
    }

    fn setup() -> (tempfile::TempDir, Arc<JournalDown>, Ledger) {
        let dir = tempfile::tempdir().unwrap();
        let stage = Arc::new(JournalDown {
            inner: LocalStage::new(dir.path()),
            down: AtomicBool::new(false),
        });
        let ledger = Ledger::new(stage.clone());
        (dir, stage, ledger)
    }

    #[tokio::test]
    async fn a_finished_day_is_recorded_reported_completed_checkpointed_and_released() {
        let (_dir, _stage, ledger) = setup();
        let session = open(&ledger, 20).await;
        assert!(!session.recovering());
        // While the day is held, nobody else opens it.
        assert!(ledger
            .acquire_day("o2", day(20), "elsewhere/1/1")
            .await
            .unwrap()
            .is_err());
        session
            .journal()
            .record(day(20), record("k1"))
            .await
            .unwrap();
        let mut log = StatusLog::new("o2", day(20));
        (log.available_for_import, log.imported) = (1, 1);
        let finished = session.finish(&mut log, &here()).await.unwrap();
        assert_eq!(
            finished,
            Finished {
                complete: true,
                reported: true,
                checkpoint: Some(day(20)),
            }
        );
        assert!(ledger
            .journal("o2")
            .recorded(day(20), &place("k1"))
            .await
            .unwrap());
        assert!(
            ledger
                .read_report("o2", day(20))
                .await
                .unwrap()
                .unwrap()
                .complete
        );
        let state = ledger.day_state("o2", day(20)).await.unwrap().unwrap();
        assert_eq!(state.status, DayStatus::Complete);
        // Released: another daemon may take the day at once.
        assert!(ledger
            .acquire_day("o2", day(20), "elsewhere/1/1")
            .await
            .unwrap()
            .is_ok());
    }

    #[tokio::test]
    async fn imports_the_journal_could_not_record_keep_the_day_open() {
        let (_dir, stage, ledger) = setup();
        let session = open(&ledger, 20).await;
        stage.down.store(true, Ordering::SeqCst);
        session
            .journal()
            .record(day(20), record("k1"))
            .await
            .unwrap();
        let mut log = StatusLog::new("o2", day(20));
        (log.available_for_import, log.imported) = (1, 1);
        let finished = session.finish(&mut log, &here()).await.unwrap();
        assert!(!finished.complete && finished.reported, "{finished:?}");
        assert!(log.errors.iter().any(|e| e.reason == "stage_unavailable"));
        assert!(!ledger.is_complete("o2", day(20)).await.unwrap());
        assert_eq!(ledger.checkpoint("o2").await.unwrap(), None);

        // The next attempt knows it is recovering and keeps what stopped the first.
        stage.down.store(false, Ordering::SeqCst);
        let session = open(&ledger, 20).await;
        assert_eq!(session.earlier(), Earlier::Journaled);
        let mut log = StatusLog::new("o2", day(20));
        session.finish(&mut log, &here()).await.unwrap();
        assert!(log.resumed);
        assert!(log
            .earlier_errors
            .iter()
            .any(|e| e.reason == "stage_unavailable"));
        assert!(log.complete);
    }

    #[tokio::test]
    async fn a_day_whose_lease_was_lost_is_left_to_its_new_holder() {
        let (_dir, _stage, ledger) = setup();
        let session = open(&ledger, 21).await;
        let mut log = StatusLog::new("o2", day(21));
        log.errors.push(DayError {
            reason: "lease_lost".into(),
            detail: "taken over".into(),
        });
        let finished = session.finish(&mut log, &here()).await.unwrap();
        assert!(!finished.reported && finished.checkpoint.is_none());
        assert!(ledger.read_report("o2", day(21)).await.unwrap().is_none());
        // The run's own log is kept all the same: it is what this run did.
        assert_eq!(ledger.run_logs("o2", day(21)).await.unwrap().len(), 1);
        assert!(!ledger.is_complete("o2", day(21)).await.unwrap());
    }

    #[tokio::test]
    async fn the_checkpoint_waits_for_the_days_before() {
        let (_dir, _stage, ledger) = setup();
        for n in [20, 22] {
            let mut log = StatusLog::new("o2", day(n));
            open(&ledger, n)
                .await
                .finish(&mut log, &here())
                .await
                .unwrap();
        }
        assert_eq!(ledger.checkpoint("o2").await.unwrap(), Some(day(20)));
        let mut log = StatusLog::new("o2", day(21));
        let finished = open(&ledger, 21)
            .await
            .finish(&mut log, &here())
            .await
            .unwrap();
        assert_eq!(finished.checkpoint, Some(day(22)));
    }
}

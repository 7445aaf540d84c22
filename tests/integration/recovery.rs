//! The pipeline under failure: crashes mid-day, bad partner records, and streaming.

use crate::overlap::sms;
use crate::support::*;
use async_trait::async_trait;
use chrono::{NaiveDate, TimeZone, Utc};
use comms_archiver::item::{Content, Direction, Item, Participant, Role};
use comms_archiver::mailbox::{Delivery, Mailbox, MailboxError, MaildirTree};
use comms_archiver::mapping::Mapper;
use comms_archiver::pipeline::{Archiver, Connector};
use comms_archiver::report::Reason;
use comms_archiver::sources::Partner;
use comms_archiver::sources::{ItemStream, Pulled, Source, SourceError};
use comms_archiver::stage::LocalStage;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 20).unwrap()
}

/// How the mailbox misbehaves.
#[derive(Clone, Copy)]
enum Fault {
    None,
    /// Refuses every append after this many (the server went away).
    DownAfter(usize),
    /// Stores the message, then fails before answering, this many appends in (the process
    /// died after the server took it and before the ledger recorded it).
    LostAnswerAt(usize),
}

/// A Maildir that counts appends per message and can fail on cue.
struct Flaky {
    inner: MaildirTree,
    fault: Fault,
    appends: AtomicUsize,
    stored: Arc<Mutex<HashMap<(String, String), usize>>>,
}

impl Flaky {
    fn new(
        root: &Path,
        fault: Fault,
        stored: Arc<Mutex<HashMap<(String, String), usize>>>,
    ) -> Self {
        Flaky {
            inner: MaildirTree::new(root),
            fault,
            appends: AtomicUsize::new(0),
            stored,
        }
    }
}

#[async_trait]
impl Mailbox for Flaky {
    async fn contains(&self, d: &Delivery<'_>) -> Result<bool, MailboxError> {
        self.inner.contains(d).await
    }

    async fn append(&self, d: &Delivery<'_>) -> Result<(), MailboxError> {
        let n = self.appends.fetch_add(1, Ordering::SeqCst) + 1;
        if let Fault::DownAfter(limit) = self.fault {
            if n > limit {
                return Err(MailboxError::Unavailable("connection reset".into()));
            }
        }
        self.inner.append(d).await?;
        *self
            .stored
            .lock()
            .unwrap()
            .entry((d.mailbox.to_string(), d.key.to_string()))
            .or_default() += 1;
        match self.fault {
            Fault::LostAnswerAt(at) if n == at => {
                Err(MailboxError::Unavailable("timed out".into()))
            }
            _ => Ok(()),
        }
    }

    fn describe(&self) -> String {
        "flaky maildir".into()
    }

    fn destination(&self) -> String {
        self.inner.destination()
    }
}

async fn run_with(
    dir: &Path,
    fault: Fault,
    stored: &Arc<Mutex<HashMap<(String, String), usize>>>,
) -> comms_archiver::report::StatusLog {
    comms_archiver::install_crypto_provider();
    let config = demo_config(dir);
    let flaky = Flaky::new(&dir.join("var/mail"), fault, stored.clone());
    let archiver = Archiver::from_config(&config)
        .unwrap()
        .with_mailbox(Arc::new(flaky));
    let connector = archiver
        .connectors()
        .iter()
        .find(|c| c.name == "o2")
        .unwrap();
    archiver.run_day(connector, day()).await.unwrap()
}

#[tokio::test]
async fn mailbox_down_mid_day_then_rerun_loses_nothing() {
    comms_archiver::install_crypto_provider();
    let ws = workspace();
    let dir = ws.path();
    let stored = Arc::new(Mutex::new(HashMap::new()));

    let log = run_with(dir, Fault::DownAfter(5), &stored).await;
    assert!(!log.complete, "a day with copies left to import stays open");
    assert_eq!(log.imported, 5);
    assert!(log.adds_up());
    assert!(log.failures.iter().any(|f| f.reason == Reason::ImportError));
    let config = demo_config(dir);
    let archiver = Archiver::from_config(&config).unwrap();
    assert_eq!(archiver.ledger().checkpoint("o2").await.unwrap(), None);

    let log = run_with(dir, Fault::None, &stored).await;
    assert!(log.complete);
    assert_eq!(log.imported, 11);
    assert_eq!(
        log.skipped_duplicates, 6,
        "5 from the first run and the partner's repeat"
    );
    assert!(log.adds_up());
    assert_eq!(counts(&dir.join("var/mail"), FOLDER), expected());
    assert!(
        stored.lock().unwrap().values().all(|&n| n == 1),
        "a message was appended twice"
    );
    assert_eq!(
        archiver.ledger().checkpoint("o2").await.unwrap(),
        Some(day())
    );
}

#[tokio::test]
async fn crash_between_import_and_ledger_does_not_import_twice() {
    let ws = workspace();
    let dir = ws.path();
    let stored = Arc::new(Mutex::new(HashMap::new()));

    // The 7th copy reaches the mailbox but its answer is lost.
    let log = run_with(dir, Fault::LostAnswerAt(7), &stored).await;
    assert!(!log.complete);
    assert_eq!(log.imported, 15);
    assert_eq!(
        log.failures
            .iter()
            .filter(|f| f.reason == Reason::ImportError)
            .count(),
        1
    );

    // The next attempt recovers: it asks the mailbox before appending what the ledger lacks.
    let log = run_with(dir, Fault::None, &stored).await;
    assert!(log.complete);
    assert_eq!(log.imported, 0);
    assert_eq!(log.skipped_duplicates, 17);
    assert!(log.adds_up());
    assert!(
        stored.lock().unwrap().values().all(|&n| n == 1),
        "a message was appended twice"
    );
    assert_eq!(stored.lock().unwrap().len(), 16);
    assert_eq!(counts(&dir.join("var/mail"), FOLDER), expected());
}

#[tokio::test]
async fn bad_records_are_reported_and_keep_the_day_open() {
    let ws = workspace();
    let dir = ws.path();
    let delivery = dir.join("fixtures/telemessage-o2/2026-11-20");
    let file = delivery.join("o2-calls-0001.jsonl");
    let good = std::fs::read_to_string(&file).unwrap();
    let broken = good.replacen("\"outcome\": \"missed\"", "\"outcome\": \"on hold\"", 1);
    std::fs::write(&file, &broken).unwrap();

    let stored = Arc::new(Mutex::new(HashMap::new()));
    let log = run_with(dir, Fault::None, &stored).await;
    assert!(!log.complete);
    let bad = log
        .failures
        .iter()
        .find(|f| f.reason == Reason::InvalidPayload)
        .unwrap();
    assert_eq!(bad.item_id, "O2-20261120-C002");
    assert_eq!(
        bad.detail,
        "o2-calls-0001.jsonl line 2: call outcome 'on hold' is not known"
    );
    assert_eq!(
        log.imported, 15,
        "the records around the bad one are imported"
    );
    assert!(log.adds_up());

    // The partner corrects the record: the next run imports exactly what was missing.
    std::fs::write(&file, &good).unwrap();
    let log = run_with(dir, Fault::None, &stored).await;
    assert!(log.complete);
    assert_eq!(log.imported, 1);
    assert_eq!(counts(&dir.join("var/mail"), FOLDER), expected());

    // A delivery that does not match its manifest is not imported at all.
    std::fs::write(&file, good.lines().next().unwrap().to_string() + "\n").unwrap();
    let fresh = workspace();
    std::fs::copy(
        &file,
        fresh
            .path()
            .join("fixtures/telemessage-o2/2026-11-20/o2-calls-0001.jsonl"),
    )
    .unwrap();
    let log = run_with(fresh.path(), Fault::None, &stored).await;
    assert!(!log.complete);
    assert_eq!(log.available_from_source, 0);
    assert_eq!(log.errors[0].reason, "reconciliation");
    assert!(
        log.errors[0]
            .detail
            .contains("manifest says o2-calls-0001.jsonl holds 4 records, it holds 1"),
        "{}",
        log.errors[0].detail
    );
    assert!(!fresh.path().join("var/mail").exists());
}

/// A source that makes items on demand and checks that the pipeline never gets more than a
/// few items ahead of what it has staged: the day is never buffered (it is delivered from
/// the stage once collected).
struct Lazy {
    total: usize,
    staged: PathBuf,
}

struct LazyStream {
    next: usize,
    total: usize,
    staged: PathBuf,
}

/// The messages staged under `dir` so far.
fn files_under(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type().is_ok_and(|t| t.is_dir()) {
            true => files_under(&e.path()),
            false => usize::from(e.file_name().to_string_lossy().ends_with(".eml")),
        })
        .sum()
}

const IN_FLIGHT: usize = 4;

#[async_trait]
impl Source for Lazy {
    async fn open(&self, _day: NaiveDate) -> Result<Box<dyn ItemStream>, SourceError> {
        Ok(Box::new(LazyStream {
            next: 0,
            total: self.total,
            staged: self.staged.clone(),
        }))
    }

    fn describe(&self) -> String {
        "lazy".into()
    }
}

#[async_trait]
impl ItemStream for LazyStream {
    async fn next(&mut self) -> Result<Option<Pulled>, SourceError> {
        // In flight at most: the copies being staged, one record waiting in the channel
        // and the one being handed over.
        let behind = self.next - files_under(&self.staged);
        assert!(
            behind <= IN_FLIGHT + 2,
            "item {} was requested with {behind} items not yet staged",
            self.next
        );
        if self.next == self.total {
            return Ok(None);
        }
        let i = self.next;
        self.next += 1;
        let party = |role, n: usize, archived: bool| Participant {
            role: Some(role),
            phone: Some(format!("+4477009{n:05}")),
            email: archived.then(|| format!("user{}@contoso.com", n % 7)),
            archived,
            ..Default::default()
        };
        Ok(Some(Pulled::Item(Box::new(Item {
            partner_id: format!("GEN-{i}"),
            time: Utc.with_ymd_and_hms(2026, 11, 20, 0, 0, 0).unwrap()
                + chrono::Duration::seconds(i as i64),
            direction: Direction::Outbound,
            conversation: None,
            participants: vec![
                party(Role::From, i, true),
                party(Role::To, 90000 + i % 50, false),
            ],
            content: Content::Sms {
                text: format!("message {i}"),
            },
        }))))
    }
}

/// A Maildir that counts the messages appended to it.
pub(crate) struct Counting {
    pub(crate) inner: MaildirTree,
    pub(crate) appended: Arc<AtomicUsize>,
}

#[async_trait]
impl Mailbox for Counting {
    async fn contains(&self, d: &Delivery<'_>) -> Result<bool, MailboxError> {
        self.inner.contains(d).await
    }
    async fn append(&self, d: &Delivery<'_>) -> Result<(), MailboxError> {
        self.inner.append(d).await?;
        self.appended.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn describe(&self) -> String {
        "counting".into()
    }

    fn destination(&self) -> String {
        self.inner.destination()
    }
}

#[tokio::test]
async fn items_stream_with_a_bounded_lag() {
    let dir = tempfile::tempdir().unwrap();
    let appended = Arc::new(AtomicUsize::new(0));
    let connector = Connector {
        name: "gen".into(),
        partner: Partner::named("telemessage-o2").unwrap(),
        folder: FOLDER.into(),
        source: Box::new(Lazy {
            total: 300,
            staged: dir.path().join("stage/staged"),
        }),
        mapper: Mapper::new(None, true, vec!["contoso.com".into()]),
    };
    let archiver = Archiver::new(
        vec![connector],
        Arc::new(LocalStage::new(dir.path().join("stage"))),
        Arc::new(Counting {
            inner: MaildirTree::new(dir.path().join("mail")),
            appended: appended.clone(),
        }),
        10 * 1024 * 1024,
    )
    .with_max_in_flight(IN_FLIGHT);
    let log = archiver
        .run_day(&archiver.connectors()[0], day())
        .await
        .unwrap();
    assert!(log.complete);
    assert_eq!(log.imported, 300);
    assert_eq!(appended.load(Ordering::SeqCst), 300);
}

#[tokio::test]
async fn catch_up_runs_due_days_and_checkpoints_only_complete_ones() {
    comms_archiver::install_crypto_provider();
    let ws = workspace();
    let dir = ws.path();
    let config = demo_config(dir);
    let archiver = Arc::new(Archiver::from_config(&config).unwrap());
    let wake = |d: u32| Utc.with_ymd_and_hms(2026, 11, d, 5, 0, 0).unwrap();

    assert!(comms_archiver::scheduler::catch_up(&archiver, 7, wake(21))
        .await
        .unwrap());
    assert_eq!(
        archiver.ledger().checkpoint("o2").await.unwrap(),
        Some(day())
    );
    assert_eq!(counts(&dir.join("var/mail"), FOLDER), expected());

    // Two days later neither the 21st nor the 22nd has been delivered: both stay open.
    assert!(!comms_archiver::scheduler::catch_up(&archiver, 7, wake(23))
        .await
        .unwrap());
    assert_eq!(
        archiver.ledger().checkpoint("o2").await.unwrap(),
        Some(day())
    );
    let next = NaiveDate::from_ymd_opt(2026, 11, 21).unwrap();
    assert!(!archiver.ledger().is_complete("o2", next).await.unwrap());
}

/// A partner stream whose parser panics on its third record.
struct Panicking;

struct PanickingStream(usize);

#[async_trait]
impl Source for Panicking {
    async fn open(&self, _day: NaiveDate) -> Result<Box<dyn ItemStream>, SourceError> {
        Ok(Box::new(PanickingStream(0)))
    }

    fn describe(&self) -> String {
        "panicking".into()
    }
}

#[async_trait]
impl ItemStream for PanickingStream {
    async fn next(&mut self) -> Result<Option<Pulled>, SourceError> {
        self.0 += 1;
        if self.0 == 3 {
            panic!("parser bug at record 3");
        }
        let time = Utc
            .with_ymd_and_hms(2026, 11, 20, 9, 0, self.0 as u32)
            .unwrap();
        Ok(Some(Pulled::Item(Box::new(sms(
            &format!("P-{}", self.0),
            time,
        )))))
    }
}

#[tokio::test]
async fn a_reader_that_panics_leaves_the_day_open_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let connector = Connector {
        name: "o2".into(),
        partner: Partner::named("telemessage-o2").unwrap(),
        folder: FOLDER.into(),
        source: Box::new(Panicking),
        mapper: Mapper::new(None, true, vec!["contoso.com".into()]),
    };
    let archiver = Archiver::new(
        vec![connector],
        Arc::new(LocalStage::new(dir.path().join("stage"))),
        Arc::new(MaildirTree::new(dir.path().join("mail"))),
        10 * 1024 * 1024,
    );
    let log = archiver
        .run_day(&archiver.connectors()[0], day())
        .await
        .unwrap();
    assert!(
        !log.complete,
        "a day whose reader died is not complete: {log:?}"
    );
    assert_eq!(
        log.imported, 2,
        "what was read before the panic is imported"
    );
    let error = log
        .errors
        .iter()
        .find(|e| e.reason == "source_reader_died")
        .unwrap_or_else(|| panic!("no reader error in {:?}", log.errors));
    assert!(
        error.detail.contains("parser bug at record 3"),
        "{}",
        error.detail
    );
    assert_eq!(
        archiver.ledger().checkpoint("o2").await.unwrap(),
        None,
        "the day is not checkpointed"
    );
}

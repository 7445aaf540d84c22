//! The scheduler's test scaffold: a daemon on tokio's paused time with scripted partners
//! that record when each day was asked for.

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use comms_archiver::config::Config;
use comms_archiver::item::{Content, Direction, Item, Participant, Role};
use comms_archiver::mailbox::{Delivery, Mailbox, MailboxError, MaildirTree};
use comms_archiver::mapping::Mapper;
use comms_archiver::pipeline::{Archiver, Connector};
use comms_archiver::scheduler::{self, Clock, TokioClock};
use comms_archiver::sources::Partner;
use comms_archiver::sources::{ItemStream, Pulled, Source, SourceError};
use comms_archiver::stage::LocalStage;
use comms_archiver::telemetry::RunState;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

pub type Opened = Arc<Mutex<Vec<(NaiveDate, DateTime<Utc>)>>>;

#[derive(Clone, Copy)]
pub enum Behaviour {
    /// Two SMS a day.
    Deliver,
    /// Never answers (a partner that hangs).
    Hang,
    /// Not delivered for the first N opens, then delivered.
    LateBy(usize),
}

/// An in-memory partner that records when each day was asked for.
struct Scripted {
    behaviour: Behaviour,
    clock: TokioClock,
    opened: Opened,
    opens: AtomicUsize,
}

struct Items {
    day: NaiveDate,
    left: usize,
}

#[async_trait]
impl Source for Scripted {
    async fn open(&self, day: NaiveDate) -> Result<Box<dyn ItemStream>, SourceError> {
        self.opened.lock().unwrap().push((day, self.clock.now()));
        let n = self.opens.fetch_add(1, Ordering::SeqCst);
        match self.behaviour {
            Behaviour::Hang => std::future::pending().await,
            Behaviour::LateBy(times) if n < times => {
                Err(SourceError::NotReady(format!("{day} not delivered yet")))
            }
            _ => Ok(Box::new(Items { day, left: 2 })),
        }
    }

    fn describe(&self) -> String {
        "scripted".into()
    }
}

#[async_trait]
impl ItemStream for Items {
    async fn next(&mut self) -> Result<Option<Pulled>, SourceError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        let party = |role, phone: &str, email: Option<&str>| Participant {
            role: Some(role),
            phone: Some(phone.into()),
            email: email.map(str::to_string),
            archived: email.is_some(),
            ..Default::default()
        };
        Ok(Some(Pulled::Item(Box::new(Item {
            partner_id: format!("{}-{}", self.day, self.left),
            time: self
                .day
                .and_hms_opt(12, 0, self.left as u32)
                .unwrap()
                .and_utc(),
            direction: Direction::Outbound,
            conversation: None,
            participants: vec![
                party(Role::From, "+447700900101", Some("alice@contoso.com")),
                party(Role::To, "+447700900555", None),
            ],
            content: Content::Sms {
                text: "hello".into(),
            },
        }))))
    }
}

fn config(dir: &Path, extra_schedule: &str) -> Config {
    let text = format!(
        r#"
[schedule]
wake_time = "04:00"
shutdown_timeout_secs = 5
{extra_schedule}
[mapping]
domains = ["contoso.com"]
[stage]
kind = "local"
path = "{d}/stage"
[mailbox]
kind = "maildir"
path = "{d}/mail"
[connectors.unused]
partner = "telemessage-o2"
[connectors.unused.source]
transport = "drop"
path = "{d}/drop"
"#,
        d = dir.display()
    );
    Config::from_toml(Path::new("test.toml"), &text, &[]).unwrap()
}

fn connector(name: &str, behaviour: Behaviour, clock: TokioClock, opened: &Opened) -> Connector {
    Connector {
        name: name.into(),
        partner: Partner::named("telemessage-o2").unwrap(),
        folder: "O2 SMS and Voice Network Archiver".into(),
        source: Box::new(Scripted {
            behaviour,
            clock,
            opened: opened.clone(),
            opens: AtomicUsize::new(0),
        }),
        mapper: Mapper::new(None, true, vec!["contoso.com".into()]),
    }
}

/// A Maildir whose mailboxes do not exist while `missing` is set, as in a tenant where the
/// admin has not created them yet.
struct NotCreatedYet {
    inner: MaildirTree,
    missing: Arc<AtomicBool>,
}

#[async_trait]
impl Mailbox for NotCreatedYet {
    async fn contains(&self, d: &Delivery<'_>) -> Result<bool, MailboxError> {
        self.inner.contains(d).await
    }
    async fn append(&self, d: &Delivery<'_>) -> Result<(), MailboxError> {
        match self.missing.load(Ordering::SeqCst) {
            true => Err(MailboxError::NoSuchMailbox(d.mailbox.to_string())),
            false => self.inner.append(d).await,
        }
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn destination(&self) -> String {
        self.inner.destination()
    }
}

fn archiver(
    dir: &Path,
    connectors: Vec<Connector>,
    stop: watch::Receiver<bool>,
    missing: Arc<AtomicBool>,
) -> Arc<Archiver> {
    let inner = MaildirTree::new(dir.join("mail"));
    Arc::new(
        Archiver::new(
            connectors,
            Arc::new(LocalStage::new(dir.join("stage"))),
            Arc::new(NotCreatedYet { inner, missing }),
            10 * 1024 * 1024,
        )
        .with_shutdown(stop),
    )
}

pub fn d(y: i32, m: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, day).unwrap()
}

pub fn at(y: i32, m: u32, day: u32, h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, day, h, 0, 0).unwrap()
}

/// The daemon's loop in a task, as `run` starts it.
fn spawn_daemon(
    archiver: &Arc<Archiver>,
    config: Config,
    clock: TokioClock,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<comms_archiver::Result<()>> {
    let archiver = archiver.clone();
    tokio::spawn(async move {
        let state = Arc::new(RunState::default());
        scheduler::run(archiver, &config.schedule, Arc::new(clock), stop, state).await
    })
}

/// Lets virtual time run until `done` holds (checked every virtual minute).
pub async fn until(done: impl Fn() -> bool) {
    for _ in 0..(60 * 24 * 10) {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
    panic!("condition not reached within ten virtual days");
}

/// A daemon under test: its scripted connectors, its archiver, and its loop once started.
pub struct Scaffold {
    pub dir: tempfile::TempDir,
    pub clock: TokioClock,
    pub opened: Opened,
    pub archiver: Arc<Archiver>,
    /// While set, the mailboxes do not exist (copies are held).
    pub mailboxes_missing: Arc<AtomicBool>,
    stop: watch::Sender<bool>,
    daemon: Option<tokio::task::JoinHandle<comms_archiver::Result<()>>>,
}

impl Scaffold {
    /// Connectors named and scripted as given, the clock at `now`; not started.
    pub fn new(now: DateTime<Utc>, connectors: &[(&str, Behaviour)]) -> Scaffold {
        let dir = tempfile::tempdir().unwrap();
        let clock = TokioClock::starting_at(now);
        let opened: Opened = Default::default();
        let (stop, rx) = watch::channel(false);
        let connectors = connectors
            .iter()
            .map(|(name, behaviour)| connector(name, *behaviour, clock, &opened))
            .collect();
        let mailboxes_missing = Arc::new(AtomicBool::new(false));
        let archiver = archiver(dir.path(), connectors, rx, mailboxes_missing.clone());
        Scaffold {
            dir,
            clock,
            opened,
            archiver,
            mailboxes_missing,
            stop,
            daemon: None,
        }
    }

    /// Runs the daemon's loop, as `run` starts it, with `extra_schedule` in `[schedule]`.
    pub fn start(&mut self, extra_schedule: &str) {
        let config = config(self.dir.path(), extra_schedule);
        let rx = self.stop.subscribe();
        self.daemon = Some(spawn_daemon(&self.archiver, config, self.clock, rx));
    }

    /// Lets virtual time run until `n` days were asked for.
    pub async fn until_opened(&self, n: usize) {
        until(|| self.opened.lock().unwrap().len() >= n).await;
    }

    /// Asks the daemon to stop and waits for it; when each day was asked for.
    pub async fn stop(&mut self) -> Vec<(NaiveDate, DateTime<Utc>)> {
        self.stop.send(true).unwrap();
        if let Some(daemon) = self.daemon.take() {
            daemon.await.unwrap().unwrap();
        }
        self.opened.lock().unwrap().clone()
    }
}

//! The daemon's schedule under tokio's paused time: days go by in milliseconds.

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use comms_archiver::config::Config;
use comms_archiver::item::{Content, Direction, Item, Participant, Role};
use comms_archiver::mailbox::MaildirTree;
use comms_archiver::mapping::Mapper;
use comms_archiver::pipeline::{Archiver, Connector};
use comms_archiver::scheduler::{self, Clock, TokioClock};
use comms_archiver::sources::Partner;
use comms_archiver::sources::{ItemStream, Pulled, Source, SourceError};
use comms_archiver::stage::LocalStage;
use comms_archiver::telemetry::RunState;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

type Opened = Arc<Mutex<Vec<(NaiveDate, DateTime<Utc>)>>>;

#[derive(Clone, Copy)]
enum Behaviour {
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

fn archiver(dir: &Path, connectors: Vec<Connector>, stop: watch::Receiver<bool>) -> Arc<Archiver> {
    Arc::new(
        Archiver::new(
            connectors,
            Arc::new(LocalStage::new(dir.join("stage"))),
            Arc::new(MaildirTree::new(dir.join("mail"))),
            10 * 1024 * 1024,
        )
        .with_shutdown(stop),
    )
}

fn d(y: i32, m: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, day).unwrap()
}

fn at(y: i32, m: u32, day: u32, h: u32) -> DateTime<Utc> {
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
async fn until(done: impl Fn() -> bool) {
    for _ in 0..(60 * 24 * 10) {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
    panic!("condition not reached within ten virtual days");
}

#[tokio::test(start_paused = true)]
async fn a_daemon_down_for_three_days_catches_up_in_order_then_wakes_daily() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TokioClock::starting_at(at(2026, 11, 21, 5));
    let opened: Opened = Default::default();
    let (tx, rx) = watch::channel(false);
    let archiver = archiver(
        dir.path(),
        vec![connector("o2", Behaviour::Deliver, clock, &opened)],
        rx.clone(),
    );
    // The last day finished before the outage.
    archiver
        .ledger()
        .complete_day("o2", d(2026, 11, 17))
        .await
        .unwrap();

    let config = config(dir.path(), "");
    let daemon = spawn_daemon(&archiver, config, clock, rx);
    until(|| opened.lock().unwrap().len() >= 5).await;
    tx.send(true).unwrap();
    daemon.await.unwrap().unwrap();

    let opened = opened.lock().unwrap().clone();
    let days: Vec<NaiveDate> = opened.iter().map(|(day, _)| *day).collect();
    assert_eq!(
        &days[..5],
        &[
            d(2026, 11, 18),
            d(2026, 11, 19),
            d(2026, 11, 20),
            d(2026, 11, 21),
            d(2026, 11, 22)
        ]
    );
    assert!(
        opened[..3]
            .iter()
            .all(|(_, when)| *when == at(2026, 11, 21, 5)),
        "{opened:?}"
    );
    assert_eq!(
        opened[3].1,
        at(2026, 11, 22, 4),
        "the next wake is 04:00 UTC"
    );
    assert_eq!(opened[4].1, at(2026, 11, 23, 4));
    assert!(archiver.ledger().checkpoint("o2").await.unwrap() >= Some(d(2026, 11, 21)));
}

#[tokio::test(start_paused = true)]
async fn a_dst_change_neither_shifts_nor_repeats_a_day() {
    let dir = tempfile::tempdir().unwrap();
    // British Summer Time ends on Sunday 2026-10-25; the wake is 04:00 London time.
    let clock = TokioClock::starting_at(at(2026, 10, 23, 12));
    let opened: Opened = Default::default();
    let (tx, rx) = watch::channel(false);
    let archiver = archiver(
        dir.path(),
        vec![connector("o2", Behaviour::Deliver, clock, &opened)],
        rx.clone(),
    );
    archiver
        .ledger()
        .complete_day("o2", d(2026, 10, 22))
        .await
        .unwrap();

    let config = config(dir.path(), "time_zone = \"Europe/London\"");
    let daemon = spawn_daemon(&archiver, config, clock, rx);
    until(|| opened.lock().unwrap().len() >= 4).await;
    tx.send(true).unwrap();
    daemon.await.unwrap().unwrap();

    let opened = opened.lock().unwrap().clone();
    assert_eq!(
        &opened[..4],
        &[
            (d(2026, 10, 23), at(2026, 10, 24, 3)),
            (d(2026, 10, 24), at(2026, 10, 25, 4)),
            (d(2026, 10, 25), at(2026, 10, 26, 4)),
            (d(2026, 10, 26), at(2026, 10, 27, 4)),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn one_partner_down_does_not_hold_back_another() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TokioClock::starting_at(at(2026, 11, 21, 5));
    let opened: Opened = Default::default();
    let (tx, rx) = watch::channel(false);
    let archiver = archiver(
        dir.path(),
        vec![
            connector("down", Behaviour::Hang, clock, &opened),
            connector("up", Behaviour::Deliver, clock, &opened),
        ],
        rx.clone(),
    );
    let config = config(dir.path(), "");
    let daemon = spawn_daemon(&archiver, config, clock, rx);
    let ledger = archiver.ledger().clone();
    for _ in 0..600 {
        if ledger.checkpoint("up").await.unwrap().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(
        ledger.checkpoint("up").await.unwrap(),
        Some(d(2026, 11, 20))
    );
    assert_eq!(ledger.checkpoint("down").await.unwrap(), None);

    // The hung partner cannot keep the daemon from stopping: it gets the grace period.
    tx.send(true).unwrap();
    let stopped_at = clock.now();
    daemon.await.unwrap().unwrap();
    assert!(clock.now() - stopped_at <= chrono::Duration::seconds(6));
}

#[tokio::test(start_paused = true)]
async fn an_open_day_is_retried_with_backoff_before_the_next_wake() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TokioClock::starting_at(at(2026, 11, 21, 5));
    let opened: Opened = Default::default();
    let (tx, rx) = watch::channel(false);
    let archiver = archiver(
        dir.path(),
        vec![connector("o2", Behaviour::LateBy(2), clock, &opened)],
        rx.clone(),
    );
    let config = config(dir.path(), "");
    let daemon = spawn_daemon(&archiver, config, clock, rx);
    until(|| opened.lock().unwrap().len() >= 3).await;
    tx.send(true).unwrap();
    daemon.await.unwrap().unwrap();

    let opened = opened.lock().unwrap().clone();
    let five = at(2026, 11, 21, 5);
    let times: Vec<i64> = opened
        .iter()
        .map(|(_, t)| (*t - five).num_minutes())
        .collect();
    assert_eq!(
        &times[..3],
        &[0, 5, 20],
        "retried after 5 and then 15 minutes"
    );
    assert_eq!(
        archiver.ledger().checkpoint("o2").await.unwrap(),
        Some(d(2026, 11, 20))
    );
}

//! One budget of bytes in flight for every connector-day at work in the process.

use crate::support::*;
use async_trait::async_trait;
use chrono::NaiveDate;
use comms_archiver::mailbox::{Delivery, Mailbox, MailboxError, MaildirTree};
use comms_archiver::pipeline::Archiver;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A Maildir whose appends take a while, counting how many run at once.
struct Slow {
    inner: MaildirTree,
    now: AtomicUsize,
    most: AtomicUsize,
}

#[async_trait]
impl Mailbox for Slow {
    async fn contains(&self, d: &Delivery<'_>) -> Result<bool, MailboxError> {
        self.inner.contains(d).await
    }
    async fn append(&self, d: &Delivery<'_>) -> Result<(), MailboxError> {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let appended = self.inner.append(d).await;
        self.now.fetch_sub(1, Ordering::SeqCst);
        appended
    }
    fn describe(&self) -> String {
        "slow maildir".into()
    }
    fn destination(&self) -> String {
        self.inner.destination()
    }
}

fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 20).unwrap()
}

/// The demo's archiver delivering into `store`, with room for one message in flight.
fn room_for_one(dir: &std::path::Path, store: Arc<dyn Mailbox>) -> Archiver {
    comms_archiver::install_crypto_provider();
    Archiver::from_config(&demo_config(dir))
        .unwrap()
        .with_mailbox(store)
        .with_max_in_flight_bytes(1)
}

/// The demo's four connectors side by side (as `run` has them) with room for one message
/// in flight: their deliveries share it, so no two copies are ever appended at once; each
/// connector with a budget of its own would append up to four.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connectors_side_by_side_share_one_budget() {
    let ws = workspace();
    let dir = ws.path();
    let slow = Arc::new(Slow {
        inner: MaildirTree::new(dir.join("var/mail")),
        now: AtomicUsize::new(0),
        most: AtomicUsize::new(0),
    });
    let archiver = room_for_one(dir, slow.clone());
    let runs = archiver
        .connectors()
        .iter()
        .map(|c| archiver.run_day(c, day()));
    let logs = futures::future::join_all(runs).await;
    assert_eq!(logs.len(), 4);
    for log in logs {
        let log = log.unwrap();
        assert!(log.complete, "{}: {:?}", log.connector, log.failures);
    }
    assert_eq!(counts(&dir.join("var/mail"), FOLDER), expected());
    assert_eq!(
        slow.most.load(Ordering::SeqCst),
        1,
        "copies appended at once"
    );
}

/// A Maildir whose store paces one mailbox: its copies wait until every other mailbox's copy
/// is appended (20 s at most, then it says it waited in vain). Every copy is given room of
/// its length, which its append draws on.
struct PacesOne {
    inner: MaildirTree,
    paced: String,
    /// Copies of the other mailboxes: to append, and appended.
    others: usize,
    appended: AtomicUsize,
    asked: AtomicUsize,
    in_vain: AtomicUsize,
    /// What each copy's append drew from the room kept for it, and what was let go unused.
    drawn: Arc<std::sync::Mutex<Vec<(u64, u64)>>>,
    unused: Arc<std::sync::Mutex<Vec<u64>>>,
}

#[async_trait]
impl Mailbox for PacesOne {
    async fn contains(&self, d: &Delivery<'_>) -> Result<bool, MailboxError> {
        self.inner.contains(d).await
    }
    async fn append(&self, d: &Delivery<'_>) -> Result<(), MailboxError> {
        let bytes = d.message.len() as u64;
        let drawn = comms_archiver::mailbox::Paced::draw(d.mailbox, bytes);
        self.drawn.lock().unwrap().push((bytes, drawn));
        self.inner.append(d).await?;
        if self.paced != d.mailbox {
            self.appended.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }
    fn describe(&self) -> String {
        "maildir pacing one mailbox".into()
    }
    fn destination(&self) -> String {
        self.inner.destination()
    }
    async fn pace(&self, mailbox: &str, bytes: u64) -> comms_archiver::mailbox::Paced {
        self.asked.fetch_add(1, Ordering::SeqCst);
        if self.paced == mailbox {
            let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
            while self.appended.load(Ordering::SeqCst) < self.others {
                if std::time::Instant::now() > until {
                    self.in_vain.fetch_add(1, Ordering::SeqCst);
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
        let unused = self.unused.clone();
        comms_archiver::mailbox::Paced::kept(mailbox, bytes, move |left| {
            unused.lock().unwrap().push(left)
        })
    }
}

/// A copy waiting for its mailbox's pace (Graph's upload limit) holds no room in the budget
/// of bytes in flight: with room for one message, a mailbox paced until every other mailbox's
/// copies are in still lets them in. Taken before the pace, the room would be held by the
/// waiting copy, and no other copy could go in until the pace let it go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mailbox_waiting_for_its_pace_holds_no_room() {
    let ws = workspace();
    let dir = ws.path();
    let total: usize = expected().iter().map(|(_, n)| n).sum();
    // The mailbox with the most copies is paced: it starts first, and would take the room.
    let (paced, most) = expected().into_iter().max_by_key(|(_, n)| *n).unwrap();
    let store = Arc::new(PacesOne {
        inner: MaildirTree::new(dir.join("var/mail")),
        paced,
        others: total - most,
        appended: AtomicUsize::new(0),
        asked: AtomicUsize::new(0),
        in_vain: AtomicUsize::new(0),
        drawn: Default::default(),
        unused: Default::default(),
    });
    let archiver = room_for_one(dir, store.clone());
    let connector = archiver
        .connectors()
        .iter()
        .find(|c| c.folder == FOLDER)
        .unwrap();
    let log = archiver.run_day(connector, day()).await.unwrap();
    assert!(log.complete, "{:?}", log.failures);
    assert_eq!(counts(&dir.join("var/mail"), FOLDER), expected());
    assert_eq!(store.asked.load(Ordering::SeqCst), total, "every copy asks");
    assert_eq!(
        store.in_vain.load(Ordering::SeqCst),
        0,
        "the paced mailbox waited for the others in vain: its copies held the room"
    );
    // Each copy's import drew its whole room (it runs within it), and none was left over.
    let drawn = store.drawn.lock().unwrap().clone();
    assert_eq!(drawn.len(), total);
    assert!(
        drawn.iter().all(|(bytes, drawn)| bytes == drawn),
        "{drawn:?}"
    );
    assert_eq!(*store.unused.lock().unwrap(), vec![0; total]);
}

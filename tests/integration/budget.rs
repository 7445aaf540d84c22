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

/// The demo's four connectors side by side (as `run` has them) with room for one message
/// in flight: their deliveries share it, so no two copies are ever appended at once; each
/// connector with a budget of its own would append up to four.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connectors_side_by_side_share_one_budget() {
    comms_archiver::install_crypto_provider();
    let ws = workspace();
    let dir = ws.path();
    let config = demo_config(dir);
    let slow = Arc::new(Slow {
        inner: MaildirTree::new(dir.join("var/mail")),
        now: AtomicUsize::new(0),
        most: AtomicUsize::new(0),
    });
    let archiver = Archiver::from_config(&config)
        .unwrap()
        .with_mailbox(slow.clone())
        .with_max_in_flight_bytes(1);
    let day = NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
    let runs = archiver
        .connectors()
        .iter()
        .map(|c| archiver.run_day(c, day));
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

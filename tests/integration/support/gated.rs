//! A Maildir whose appends, after the first `free` of them, wait until a gate opens: a run
//! held in the middle of delivering for as long as a test wants, or for good (as a crash
//! leaves it) while the gate stays shut. The gate's sender must be kept: dropped, it lets
//! every append through.

use async_trait::async_trait;
use comms_archiver::mailbox::{Delivery, Mailbox, MailboxError, MaildirTree};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

pub struct GatedMaildir {
    inner: MaildirTree,
    free: usize,
    appended: AtomicUsize,
    open: watch::Receiver<bool>,
    held: AtomicBool,
}

impl GatedMaildir {
    /// A Maildir tree at `root` letting `free` appends through before the gate; the gate.
    pub fn new(root: PathBuf, free: usize) -> (Arc<GatedMaildir>, watch::Sender<bool>) {
        let (open, gate) = watch::channel(false);
        let mailbox = Arc::new(GatedMaildir {
            inner: MaildirTree::new(root),
            free,
            appended: AtomicUsize::new(0),
            open: gate,
            held: AtomicBool::new(false),
        });
        (mailbox, open)
    }

    /// Waits until an append is held at the gate; fails the test after `within`.
    pub async fn until_held(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.held.load(Ordering::SeqCst) {
            assert!(Instant::now() < deadline, "no append came to the gate");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[async_trait]
impl Mailbox for GatedMaildir {
    async fn contains(&self, d: &Delivery<'_>) -> Result<bool, MailboxError> {
        self.inner.contains(d).await
    }
    async fn append(&self, d: &Delivery<'_>) -> Result<(), MailboxError> {
        if self.appended.fetch_add(1, Ordering::SeqCst) >= self.free {
            self.held.store(true, Ordering::SeqCst);
            let _ = self.open.clone().wait_for(|open| *open).await;
        }
        self.inner.append(d).await
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn destination(&self) -> String {
        self.inner.destination()
    }
}

//! Upload room a store keeps for a copy about to be imported ([`super::Mailbox::pace`]).
//!
//! A store that paces what is uploaded to each mailbox (Graph: 150 MB per 5 minutes) would
//! otherwise make a copy wait for its pace with its bytes in memory, holding room in the
//! process's budget of bytes in flight that other mailboxes' copies could use meanwhile. So a
//! copy asks its mailbox's store first, and takes its room in the budget only once the store
//! keeps upload room for it. The requests that import the copy draw on that room
//! ([`Paced::draw`]); what they did not draw is let go when the copy is done (its [`Paced`]
//! dropped), whether it was imported, found there already or failed.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The upload room kept for one copy; let go when dropped.
pub struct Paced {
    kept: Option<Arc<Kept>>,
}

struct Kept {
    mailbox: String,
    left: AtomicU64,
    /// Given what the copy's requests did not draw.
    release: Box<dyn Fn(u64) + Send + Sync>,
}

tokio::task_local! {
    /// The room kept for the copy whose import runs in this task.
    static IMPORTING: Arc<Kept>;
}

impl Paced {
    /// Nothing kept: a store that does not pace uploads.
    pub fn unpaced() -> Self {
        Paced { kept: None }
    }

    /// `bytes` kept for a copy to `mailbox`; `release` is given what its requests did not
    /// draw once it is done.
    pub fn kept(mailbox: &str, bytes: u64, release: impl Fn(u64) + Send + Sync + 'static) -> Self {
        Paced {
            kept: Some(Arc::new(Kept {
                mailbox: mailbox.to_string(),
                left: AtomicU64::new(bytes),
                release: Box::new(release),
            })),
        }
    }

    /// Runs the copy's import, its requests drawing on the room kept.
    pub async fn within<T>(&self, import: impl Future<Output = T>) -> T {
        match &self.kept {
            Some(kept) => IMPORTING.scope(kept.clone(), import).await,
            None => import.await,
        }
    }

    /// Said by a store before it uploads `bytes` to `mailbox`: takes up to that much from the
    /// room kept for the copy being imported in this task; how much it took (nothing outside
    /// a copy's import, or for another mailbox).
    pub fn draw(mailbox: &str, bytes: u64) -> u64 {
        IMPORTING
            .try_with(|kept| {
                if kept.mailbox != mailbox {
                    return 0;
                }
                let mut drawn = 0;
                let _ = kept
                    .left
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                        drawn = left.min(bytes);
                        Some(left - drawn)
                    });
                drawn
            })
            .unwrap_or(0)
    }
}

impl Drop for Paced {
    fn drop(&mut self) {
        if let Some(kept) = self.kept.take() {
            (kept.release)(kept.left.swap(0, Ordering::SeqCst));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[tokio::test]
    async fn requests_draw_on_the_room_kept_and_the_rest_is_let_go() {
        let released = Arc::new(Mutex::new(Vec::new()));
        let seen = released.clone();
        let paced = Paced::kept("a@contoso.com", 100, move |left| {
            seen.lock().unwrap().push(left)
        });
        assert_eq!(Paced::draw("a@contoso.com", 30), 0, "outside the import");
        let drawn = paced
            .within(async {
                [
                    Paced::draw("a@contoso.com", 30),
                    Paced::draw("b@contoso.com", 30),
                    Paced::draw("a@contoso.com", 50),
                    Paced::draw("a@contoso.com", 50),
                    Paced::draw("a@contoso.com", 50),
                ]
            })
            .await;
        assert_eq!(drawn, [30, 0, 50, 20, 0]);
        assert!(released.lock().unwrap().is_empty(), "kept until dropped");
        drop(paced);
        assert_eq!(*released.lock().unwrap(), [0]);

        let seen = released.clone();
        let unused = Paced::kept("a@contoso.com", 70, move |left| {
            seen.lock().unwrap().push(left)
        });
        unused
            .within(async { Paced::draw("a@contoso.com", 20) })
            .await;
        drop(unused);
        assert_eq!(*released.lock().unwrap(), [0, 50]);
    }
}

//! Exchange's limit on what an app uploads to one mailbox (the bodies of POST, PUT and PATCH,
//! upload chunks included): over it in any window, a request gets 429 with Retry-After.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The limit the fake enforces (none until [`UploadLimit::set`]), and what each mailbox was
/// sent within it.
#[derive(Default)]
pub struct UploadLimit {
    limit: Mutex<Option<(usize, Duration)>>,
    sent: Mutex<HashMap<String, VecDeque<(Instant, usize)>>>,
    /// Requests refused for it.
    pub refused: AtomicUsize,
    /// The most bytes a mailbox was sent in any window.
    pub most_in_a_window: AtomicUsize,
}

impl UploadLimit {
    /// At most `bytes` uploaded to a mailbox in any `window`.
    pub fn set(&self, bytes: usize, window: Duration) {
        *self.limit.lock().unwrap() = Some((bytes, window));
    }

    /// Whether `mailbox` may be sent `bytes` now; if so, they count from now.
    pub fn admit(&self, mailbox: &str, bytes: usize) -> bool {
        let Some((most, window)) = *self.limit.lock().unwrap() else {
            return true;
        };
        let now = Instant::now();
        let mut sent = self.sent.lock().unwrap();
        let sent = sent.entry(mailbox.to_string()).or_default();
        while sent.front().is_some_and(|(at, _)| now - *at >= window) {
            sent.pop_front();
        }
        let within: usize = sent.iter().map(|(_, n)| n).sum::<usize>() + bytes;
        if within > most {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return false;
        }
        sent.push_back((now, bytes));
        self.most_in_a_window.fetch_max(within, Ordering::SeqCst);
        true
    }
}

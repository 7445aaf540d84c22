//! The fake's answers leave at their time to within a fraction of a millisecond. Tokio's
//! timer fires on whole milliseconds, rounded up, which would make every answer most of a
//! millisecond late (2% of a 50 ms latency); a thread per waiting answer would cost hundreds
//! of threads in every wave of answers, on the cores the daemon under test runs on. One
//! thread keeps every answer's time and wakes each when it is due.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Instant;
use tokio::sync::oneshot;

/// Waits until `due`.
pub async fn answer_at(due: Instant) {
    if due <= Instant::now() {
        return;
    }
    let (wake, woken) = oneshot::channel();
    alarm().set(due, wake);
    let _ = woken.await;
}

/// An answer waiting for its time; the earliest is the greatest, for the max-heap.
struct Waiting {
    due: Instant,
    wake: oneshot::Sender<()>,
}

impl Ord for Waiting {
    fn cmp(&self, other: &Self) -> Ordering {
        other.due.cmp(&self.due)
    }
}

impl PartialOrd for Waiting {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Waiting {
    fn eq(&self, other: &Self) -> bool {
        self.due == other.due
    }
}

impl Eq for Waiting {}

struct Alarm {
    waiting: Mutex<BinaryHeap<Waiting>>,
    changed: Condvar,
}

impl Alarm {
    fn set(&self, due: Instant, wake: oneshot::Sender<()>) {
        let mut waiting = self.waiting.lock().unwrap();
        let earliest = waiting.peek().is_none_or(|first| due < first.due);
        waiting.push(Waiting { due, wake });
        if earliest {
            self.changed.notify_one();
        }
    }

    fn keep(&self) {
        let mut waiting = self.waiting.lock().unwrap();
        loop {
            let now = Instant::now();
            while waiting.peek().is_some_and(|first| first.due <= now) {
                let _ = waiting.pop().unwrap().wake.send(());
            }
            waiting = match waiting.peek().map(|first| first.due - now) {
                Some(wait) => self.changed.wait_timeout(waiting, wait).unwrap().0,
                None => self.changed.wait(waiting).unwrap(),
            };
        }
    }
}

/// The one alarm of this process, its thread started on first use.
fn alarm() -> &'static Alarm {
    static ALARM: OnceLock<&'static Alarm> = OnceLock::new();
    ALARM.get_or_init(|| {
        let alarm: &'static Alarm = Box::leak(Box::new(Alarm {
            waiting: Mutex::new(BinaryHeap::new()),
            changed: Condvar::new(),
        }));
        std::thread::Builder::new()
            .name("fake-graph-alarm".into())
            .spawn(|| alarm.keep())
            .unwrap();
        alarm
    })
}

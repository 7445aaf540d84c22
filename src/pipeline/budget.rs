//! The bytes of messages in flight, one budget for everything the process works on at once:
//! every connector-day it collects or delivers side by side takes its messages' room from it,
//! so the memory they take together stays within `archiver.max_in_flight_bytes` (plus the
//! one message that may start while a little room is left).
//!
//! A partner's files take their room before they are read ([`reading`], [`before_reading`]):
//! the readers of several connectors, each finding a little room left, never read one large
//! file each past the budget together. A record's first file waits until it fits in what is
//! left ([`Budget::take_fitting`]), and meanwhile nothing else starts: a file of 12 MiB is read
//! once what is in flight has drained to make room for it, not on top of a full budget.
//!
//! Copies being delivered wait for room in turns ([`Budget::take`]): the mailboxes with the
//! most to import first, so that the day's longest work does not wait behind the room many
//! small mailboxes take (their large files above all).

use std::future::Future;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

tokio::task_local! {
    /// The partner record being read in this task: the budget, and the room its files took.
    static READING: Reading;
}

struct Reading {
    budget: Arc<Budget>,
    room: Mutex<Option<Room>>,
}

/// Reads one partner record (`read`, run in this task) so that every file a source reads into
/// memory on the way takes its room before it is read ([`before_reading`]). Returns the
/// record and the room its files took.
pub async fn reading<T>(budget: &Arc<Budget>, read: impl Future<Output = T>) -> (T, Room) {
    let record = Reading {
        budget: budget.clone(),
        room: Mutex::new(None),
    };
    READING
        .scope(record, async {
            let read = read.await;
            let room = READING.with(|r| r.room.lock().expect("never poisoned").take());
            (read, room.unwrap_or_else(|| budget.take_now(0)))
        })
        .await
}

/// Said by a source before it reads `bytes` of a partner's file into memory. Within
/// [`reading`], their room is taken first: a record's first file waits until it fits in what
/// is left ([`Budget::take_fitting`]), the files after it take theirs at once (the record is
/// partly in memory already: waiting for room others hold could wait for good). Elsewhere (a
/// check, a test) it does nothing.
pub async fn before_reading(bytes: u64) {
    let Ok((budget, started)) = READING.try_with(|r| {
        let started = r.room.lock().expect("never poisoned").is_some();
        (r.budget.clone(), started)
    }) else {
        return;
    };
    let room = match started {
        true => budget.take_now(bytes),
        false => budget.take_fitting(bytes).await,
    };
    READING.with(|r| {
        let mut held = r.room.lock().expect("never poisoned");
        match held.as_mut() {
            Some(held) => held.join(room),
            None => *held = Some(room),
        }
    });
}

/// Room for messages in flight, shared.
pub struct Budget {
    whole: u64,
    taken: Mutex<Taken>,
    freed: Notify,
}

/// What is taken: the room in use, the room files waiting to fit count on, and the
/// messages waiting for room in the order they go: by turn, then as they asked.
#[derive(Default)]
struct Taken {
    used: u64,
    waiting: u64,
    queue: std::collections::BTreeSet<(u64, u64)>,
    asked: u64,
}

impl Taken {
    /// Whether a message may start in a budget of `whole`: files waiting to fit count on
    /// their room as taken.
    fn leaves_room(&self, whole: u64) -> bool {
        self.used + self.waiting < whole
    }
}

/// A file's room counted as waiting until it fits, or until the wait is given up.
struct Waiting<'a> {
    budget: &'a Budget,
    bytes: u64,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.budget.taken.lock().expect("never poisoned").waiting -= self.bytes;
            self.budget.freed.notify_waiters();
        }
    }
}

/// A message's place among those waiting for room, left when its wait ends or is given up.
struct Queued<'a> {
    budget: &'a Budget,
    place: (u64, u64),
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.budget
            .taken
            .lock()
            .expect("never poisoned")
            .queue
            .remove(&self.place);
        // The next in line may go now (room may be left after this one's).
        self.budget.freed.notify_waiters();
    }
}

/// Room taken for a message (or a batch of them), given back when dropped.
#[must_use = "the room is given back when dropped"]
pub struct Room {
    budget: Arc<Budget>,
    bytes: u64,
}

impl Budget {
    pub fn new(whole: u64) -> Arc<Budget> {
        Arc::new(Budget {
            whole: whole.max(1),
            taken: Mutex::new(Taken::default()),
            freed: Notify::new(),
        })
    }

    /// Its size: `archiver.max_in_flight_bytes`.
    pub fn whole(&self) -> u64 {
        self.whole
    }

    /// Whether any room is left, with what files waiting to fit count on: a message may start.
    pub fn has_room(&self) -> bool {
        self.taken
            .lock()
            .expect("never poisoned")
            .leaves_room(self.whole)
    }

    /// Returns once some room is left (given back by whoever held it).
    pub async fn room(&self) {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if self.has_room() {
                return;
            }
            freed.await;
        }
    }

    /// Takes room for `bytes` now, whatever is left: for a message already in memory, which
    /// counts from now on.
    pub fn take_now(self: &Arc<Self>, bytes: u64) -> Room {
        self.taken.lock().expect("never poisoned").used += bytes;
        Room {
            budget: self.clone(),
            bytes,
        }
    }

    /// Takes room for `bytes` once some is left and every message waiting ahead of it has
    /// gone: those of a smaller `turn`, and of the same turn that asked earlier (a message
    /// larger than the budget goes when any room is left, and may take it all). Delivering
    /// gives the mailboxes with the most to import the first turns, so that the day's
    /// longest work never waits behind the room others take.
    pub async fn take(self: &Arc<Self>, bytes: u64, turn: u64) -> Room {
        let place = {
            let mut taken = self.taken.lock().expect("never poisoned");
            taken.asked += 1;
            let place = (turn, taken.asked);
            taken.queue.insert(place);
            place
        };
        // Leaving the line (here, or when the wait is given up) lets the next in line look.
        let _queued = Queued {
            budget: self,
            place,
        };
        self.take_when(bytes, |taken| {
            taken.leaves_room(self.whole) && taken.queue.first() == Some(&place)
        })
        .await
    }

    /// Takes room for `bytes` once they fit in what is in use (or, larger than the budget,
    /// once nothing is). Meanwhile they count as taken for everyone else ([`Self::has_room`]),
    /// so that what is in flight drains until they fit.
    pub async fn take_fitting(self: &Arc<Self>, bytes: u64) -> Room {
        self.taken.lock().expect("never poisoned").waiting += bytes;
        let mut waiting = Waiting {
            budget: self,
            bytes,
        };
        let room = self
            .take_when(bytes, |taken| {
                let fits = taken.used == 0 || taken.used + bytes <= self.whole;
                if fits {
                    taken.waiting -= bytes;
                }
                fits
            })
            .await;
        // No longer waiting: its bytes left `waiting` as they were taken.
        waiting.bytes = 0;
        room
    }

    /// Takes room for `bytes` as soon as `may` says so (asked again each time room is given
    /// back, under the lock, where it may also settle what the wait counted).
    async fn take_when(
        self: &Arc<Self>,
        bytes: u64,
        mut may: impl FnMut(&mut Taken) -> bool,
    ) -> Room {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            {
                let mut taken = self.taken.lock().expect("never poisoned");
                if may(&mut taken) {
                    taken.used += bytes;
                    return Room {
                        budget: self.clone(),
                        bytes,
                    };
                }
            }
            freed.await;
        }
    }

    /// Bytes taken now.
    #[cfg(test)]
    pub(super) fn used(&self) -> u64 {
        self.taken.lock().expect("never poisoned").used
    }
}

impl Room {
    /// Adds `other`'s room to this one.
    fn join(&mut self, mut other: Room) {
        self.bytes += std::mem::take(&mut other.bytes);
    }

    /// Makes this room `bytes` large: what its message turned out to keep.
    pub fn resize(&mut self, bytes: u64) {
        let mut taken = self.budget.taken.lock().expect("never poisoned");
        taken.used = taken.used - self.bytes + bytes;
        let smaller = bytes < self.bytes;
        self.bytes = bytes;
        drop(taken);
        if smaller {
            self.budget.freed.notify_waiters();
        }
    }
}

impl Drop for Room {
    fn drop(&mut self) {
        self.budget.taken.lock().expect("never poisoned").used -= self.bytes;
        self.budget.freed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// What a spawned wait for room returns, once it does (within 5 s, or `what` fails).
    async fn within<T>(waiting: tokio::task::JoinHandle<T>, what: &str) -> T {
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect(what)
            .unwrap()
    }

    #[tokio::test]
    async fn room_is_shared_and_given_back() {
        let budget = Budget::new(100);
        let a = budget.take(60, 0).await;
        let b = budget.take(60, 0).await; // some room was left: it goes, past the budget
        assert_eq!(budget.used(), 120);
        assert!(!budget.has_room());
        // A third waits until room is given back.
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.take(10, 0).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished());
        drop(a);
        assert_eq!(budget.used(), 60);
        let c = within(waiting, "woken when room was given back").await;
        assert_eq!(budget.used(), 70);
        drop((b, c));
        assert_eq!(budget.used(), 0);
        assert!(budget.has_room());
        let now = budget.take_now(500);
        assert!(!budget.has_room());
        drop(now);
        assert!(budget.has_room());
    }

    #[tokio::test]
    async fn room_goes_by_turn_then_as_asked() {
        let budget = Budget::new(100);
        let full = budget.take_now(100);
        let (went, mut order) = tokio::sync::mpsc::unbounded_channel();
        let ask = |name: &'static str, bytes, turn| {
            let (budget, went) = (budget.clone(), went.clone());
            tokio::spawn(async move {
                let room = budget.take(bytes, turn).await;
                went.send(name).unwrap();
                room
            })
        };
        // Asked in this order; each waits until the previous is waiting.
        let settle = || tokio::time::sleep(Duration::from_millis(20));
        let late = ask("turn 3", 100, 3);
        settle().await;
        let first = ask("turn 1, first", 100, 1);
        settle().await;
        let given_up = ask("turn 0, given up", 100, 0);
        settle().await;
        let second = ask("turn 1, second", 100, 1);
        settle().await;
        given_up.abort();
        let _ = given_up.await;
        assert!(
            order.try_recv().is_err(),
            "none went while the budget was full"
        );
        // Each takes the whole budget: one goes each time room is given back.
        drop(full);
        let first = within(first, "the smallest turn goes first").await;
        settle().await;
        assert_eq!(order.try_recv(), Ok("turn 1, first"));
        assert!(order.try_recv().is_err(), "one at a time");
        drop(first);
        let second = within(second, "the same turn, asked later").await;
        assert_eq!(order.try_recv(), Ok("turn 1, second"));
        drop(second);
        let late = within(late, "the larger turn, though asked first").await;
        assert_eq!(order.try_recv(), Ok("turn 3"));
        drop(late);
        assert_eq!(budget.used(), 0);
        // Room left after one goes is for the next in line at once.
        let most = budget.take_now(100);
        let (a, b) = (ask("a", 10, 5), ask("b", 10, 6));
        settle().await;
        drop(most);
        drop((within(a, "a goes").await, within(b, "b goes too").await));
    }

    #[tokio::test]
    async fn a_file_waits_until_it_fits_and_nothing_starts_meanwhile() {
        let budget = Budget::new(100);
        let in_flight = budget.take_now(90);
        let fitting = |bytes| {
            let budget = budget.clone();
            tokio::spawn(async move { budget.take_fitting(bytes).await })
        };
        let file = fitting(30);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!file.is_finished(), "30 bytes do not fit in the 10 left");
        // Nothing else starts meanwhile, though room is left: what is in flight drains.
        assert!(!budget.has_room());
        let other = tokio::spawn({
            let budget = budget.clone();
            async move { budget.take(5, 0).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!other.is_finished(), "started ahead of the waiting file");
        drop(in_flight);
        let file = within(file, "fits once the room is given back").await;
        let other = within(other, "goes after the file").await;
        assert_eq!(budget.used(), 35);
        drop((file, other));
        // A file larger than the whole budget goes once nothing is in flight.
        let small = budget.take_now(1);
        let large = fitting(500);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!large.is_finished());
        drop(small);
        let large = within(large, "goes alone").await;
        assert_eq!(budget.used(), 500);
        drop(large);
        // A wait given up counts no more.
        let small = budget.take_now(90);
        let given_up = fitting(30);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!budget.has_room());
        given_up.abort();
        let _ = given_up.await;
        assert!(budget.has_room());
        drop(small);
        assert_eq!(budget.used(), 0);
    }
}

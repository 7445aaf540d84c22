//! What went wrong during a connector-day and was recovered from: partner answers retried,
//! unreadable pages asked for again, mailbox connections replaced, throttling waited out.
//! Components note an incident where it happens; the day's status log lists them, counted by
//! side and kind with the first detail seen, so that a complete day still says what it took.
//!
//! The collector travels with the day's task (a task-local set by the pipeline); a note made
//! outside any day (a health probe, a test) goes nowhere.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

tokio::task_local! {
    static CURRENT: Recorder;
}

/// Incidents of one kind in a day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    /// "partner", "stage" or "mailbox".
    pub side: String,
    /// What happened, e.g. "answered 503 Service Unavailable; retried".
    pub kind: String,
    pub count: u64,
    /// The first occurrence's detail (URL, mailbox, error text).
    pub example: String,
}

/// A day's incidents so far.
#[derive(Debug, Clone, Default)]
pub struct Recorder(Arc<Mutex<Seen>>);

/// (side, kind) -> (count, first example).
type Seen = BTreeMap<(String, String), (u64, String)>;

impl Recorder {
    pub fn add(&self, side: &str, kind: &str, example: impl FnOnce() -> String) {
        let mut seen = self.0.lock().expect("not poisoned");
        seen.entry((side.to_string(), kind.to_string()))
            .and_modify(|(n, _)| *n += 1)
            .or_insert_with(|| (1, example()));
    }

    pub fn list(&self) -> Vec<Incident> {
        let seen = self.0.lock().expect("not poisoned");
        seen.iter()
            .map(|((side, kind), (count, example))| Incident {
                side: side.clone(),
                kind: kind.clone(),
                count: *count,
                example: example.clone(),
            })
            .collect()
    }
}

/// Notes an incident for the current day, if there is one.
pub fn note(side: &str, kind: &str, example: impl FnOnce() -> String) {
    let _ = CURRENT.try_with(|r| r.add(side, kind, example));
}

/// The current day's recorder, to carry into a task it spawns.
pub fn current() -> Option<Recorder> {
    CURRENT.try_with(Recorder::clone).ok()
}

/// Runs `f` with incidents going to `recorder` (or nowhere).
pub async fn within<F: Future>(recorder: Option<Recorder>, f: F) -> F::Output {
    match recorder {
        Some(recorder) => CURRENT.scope(recorder, f).await,
        None => f.await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn notes_are_counted_by_kind_within_a_day_only() {
        note("partner", "outside any day", String::new);
        let day = Recorder::default();
        within(Some(day.clone()), async {
            note("partner", "answered 503; retried", || "first".into());
            note("partner", "answered 503; retried", || "second".into());
            let carried = current();
            tokio::spawn(within(carried, async {
                note("mailbox", "connection lost; reconnected", || "user1".into());
            }))
            .await
            .unwrap();
        })
        .await;
        let list = day.list();
        assert_eq!(list.len(), 2);
        assert_eq!((list[0].side.as_str(), list[0].count), ("mailbox", 1));
        assert_eq!(
            (list[1].count, list[1].example.as_str()),
            (2, "first"),
            "counted, with the first detail"
        );
    }
}

//! Each run's own run log: written once when the run ends, read back by the day's
//! reconciliation, `report --runs` and `trace`.
//!
//! A day's runs take its lease one at a time, possibly on different hosts whose clocks
//! disagree. So a run's place among the day's runs is not its start time but the runs it
//! came after: those whose logs the stage held when it took the day ([`RunInfo::follows`]).

use super::Ledger;
use crate::report::{RunInfo, StatusLog};
use crate::{Error, Result};
use chrono::NaiveDate;

impl Ledger {
    /// Stores a run's own run log, once: a second write of the same run is refused.
    pub async fn write_run_log(&self, log: &StatusLog) -> Result<()> {
        let run = log
            .run
            .as_ref()
            .ok_or_else(|| Error::State("a run log names its run".into()))?;
        let key = Self::run_key(&log.connector, log.day, &run.id);
        match self.stage.put_new(&key, log.to_json().as_bytes()).await? {
            crate::stage::Created::New => Ok(()),
            crate::stage::Created::AlreadyExists => Err(Error::State(format!(
                "run log '{key}' exists already; a run's log is written once"
            ))),
        }
    }

    /// The ids of the runs of a connector-day that have written their run logs.
    pub async fn logged_runs(&self, connector: &str, day: NaiveDate) -> Result<Vec<String>> {
        let prefix = format!("runs/{connector}/{day}/");
        let mut ids: Vec<String> = self
            .stage
            .list(&prefix)
            .await?
            .iter()
            .filter_map(|key| key.strip_prefix(&prefix)?.strip_suffix(".json"))
            .map(str::to_string)
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Every run log of a connector-day, in the order the runs took the day.
    pub async fn run_logs(&self, connector: &str, day: NaiveDate) -> Result<Vec<StatusLog>> {
        let mut logs = Vec::new();
        for key in self.stage.list(&format!("runs/{connector}/{day}/")).await? {
            if let Some(log) = self.read::<StatusLog>(&key).await? {
                logs.push(log);
            }
        }
        Ok(in_run_order(logs))
    }
}

/// Orders a day's run logs as the runs took the day: by how many runs each came after. A
/// run that took the day over from one cut off from the stage, before that one wrote its
/// log, comes after the same runs as it; the start times (then the ids) order such a pair.
/// A run log of a version that did not record the runs before it comes after the others
/// of its kind that started before it, and after every run that did not find its log.
pub fn in_run_order(logs: Vec<StatusLog>) -> Vec<StatusLog> {
    let runs: Vec<&RunInfo> = logs.iter().filter_map(|l| l.run.as_ref()).collect();
    let before = |run: &RunInfo| match &run.follows {
        Some(follows) => follows.len(),
        None => runs
            .iter()
            .filter(|r| match &r.follows {
                Some(follows) => !follows.contains(&run.id),
                None => r.started_at < run.started_at,
            })
            .count(),
    };
    let keys: Vec<_> = logs
        .iter()
        .map(|l| {
            l.run
                .as_ref()
                .map(|r| (before(r), r.started_at, r.id.clone()))
        })
        .collect();
    let mut keyed: Vec<_> = keys.into_iter().zip(logs).collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    keyed.into_iter().map(|(_, log)| log).collect()
}

/// Whether `run` took the day after `earlier` had ended (written its log).
pub fn came_after(run: &RunInfo, earlier: &RunInfo) -> bool {
    match &run.follows {
        Some(follows) => follows.contains(&earlier.id),
        None => run.started_at >= earlier.started_at,
    }
}

/// A delivery run's log of the O2 day 2026-11-20, for tests: run `id`, started and ended at
/// `at` by its host's clock, after `follows` (None: a log of a version that did not say).
#[cfg(test)]
pub(super) fn test_run_log(
    id: &str,
    at: chrono::DateTime<chrono::Utc>,
    follows: Option<&[&str]>,
) -> StatusLog {
    let mut log = StatusLog::new("o2", NaiveDate::from_ymd_opt(2026, 11, 20).unwrap());
    log.completed_at = at;
    log.run = Some(RunInfo {
        kind: crate::report::RunKind::Delivery,
        id: id.into(),
        started_at: at,
        ended_at: at,
        host: "host".into(),
        version: "0".into(),
        destination: "maildir /var/mail".into(),
        folder: "O2".into(),
        stopped_by: Vec::new(),
        follows: follows.map(|f| f.iter().map(|s| s.to_string()).collect()),
    });
    log
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Duration, Utc};

    fn log(id: &str, minute: i64, follows: Option<&[&str]>) -> StatusLog {
        let at = "2026-11-21T06:00:00Z".parse::<DateTime<Utc>>().unwrap();
        test_run_log(id, at + Duration::minutes(minute), follows)
    }

    fn ids(logs: &[StatusLog]) -> Vec<&str> {
        logs.iter()
            .map(|l| l.run.as_ref().unwrap().id.as_str())
            .collect()
    }

    #[test]
    fn runs_are_ordered_by_the_runs_they_came_after_not_by_their_clocks() {
        // c's host is twenty minutes behind a's and b's.
        let logs = in_run_order(vec![
            log("c", -10, Some(&["a", "b"])),
            log("b", 10, Some(&["a"])),
            log("a", 0, Some(&[])),
        ]);
        assert_eq!(ids(&logs), ["a", "b", "c"]);
        let run = |i: usize| logs[i].run.as_ref().unwrap();
        assert!(came_after(run(2), run(1)) && came_after(run(2), run(0)));
        assert!(!came_after(run(1), run(2)) && !came_after(run(0), run(0)));
    }

    #[test]
    fn logs_that_do_not_say_are_placed_by_their_start_times() {
        // Two runs of an earlier version, then one that follows both from a host behind.
        let logs = in_run_order(vec![
            log("new", -30, Some(&["old-1", "old-2"])),
            log("old-2", 5, None),
            log("old-1", 0, None),
        ]);
        assert_eq!(ids(&logs), ["old-1", "old-2", "new"]);
        let run = |i: usize| logs[i].run.as_ref().unwrap();
        assert!(came_after(run(1), run(0)) && !came_after(run(0), run(1)));
        // A run that took the day over from one cut off before it wrote its log comes after
        // the same runs: their start times order the pair.
        let logs = in_run_order(vec![
            log("took-over", 8, Some(&["old-1"])),
            log("cut-off", 2, Some(&["old-1"])),
            log("old-1", 0, None),
        ]);
        assert_eq!(ids(&logs), ["old-1", "cut-off", "took-over"]);
        // A run of an earlier version after two of this one (a replica not upgraded yet):
        // neither found its log, so it came after both.
        let logs = in_run_order(vec![
            log("old", 1, None),
            log("new-2", 5, Some(&["new-1"])),
            log("new-1", 0, Some(&[])),
        ]);
        assert_eq!(ids(&logs), ["new-1", "new-2", "old"]);
    }
}

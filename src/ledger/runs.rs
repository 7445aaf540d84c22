//! Each run's own run log: written once when the run ends, read back by the day's
//! reconciliation, `report --runs` and `trace`.

use super::Ledger;
use crate::report::StatusLog;
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

    /// Every run log of a connector-day, oldest first.
    pub async fn run_logs(&self, connector: &str, day: NaiveDate) -> Result<Vec<StatusLog>> {
        let mut logs = Vec::new();
        for key in self.stage.list(&format!("runs/{connector}/{day}/")).await? {
            if let Some(log) = self.read::<StatusLog>(&key).await? {
                logs.push(log);
            }
        }
        logs.sort_by_key(|l| l.run.as_ref().map(|r| (r.started_at, r.id.clone())));
        Ok(logs)
    }
}

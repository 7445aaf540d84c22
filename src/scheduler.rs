//! The daily wake: every day at the configured UTC time, each connector processes every day
//! from its checkpoint to yesterday (at most `catch_up_days` of them on its own).

use crate::config::Config;
use crate::pipeline::Archiver;
use crate::Result;
use chrono::{DateTime, Days, NaiveDate, NaiveTime, Utc};
use tokio::sync::watch;

/// The days a connector still has to process, oldest first: from the day after its
/// checkpoint (or yesterday, for a connector that has never completed a day) to yesterday,
/// never more than `catch_up_days`.
pub fn days_due(
    today: NaiveDate,
    checkpoint: Option<NaiveDate>,
    catch_up_days: u32,
) -> Vec<NaiveDate> {
    let Some(yesterday) = today.pred_opt() else {
        return Vec::new();
    };
    let earliest = yesterday
        .checked_sub_days(Days::new(u64::from(catch_up_days.max(1)) - 1))
        .unwrap_or(yesterday);
    let start = match checkpoint {
        Some(c) => c.succ_opt().unwrap_or(c).max(earliest),
        None => yesterday,
    };
    start.iter_days().take_while(|d| *d <= yesterday).collect()
}

/// The next wake strictly after `now`.
pub fn next_wake(now: DateTime<Utc>, wake: NaiveTime) -> DateTime<Utc> {
    let today = now.date_naive().and_time(wake).and_utc();
    if today > now {
        today
    } else {
        today + chrono::Duration::days(1)
    }
}

/// Processes what is due for every connector now. Returns true when every day is complete.
pub async fn catch_up(archiver: &Archiver, config: &Config, now: DateTime<Utc>) -> Result<bool> {
    let mut all_complete = true;
    for connector in archiver.connectors() {
        let checkpoint = archiver.ledger().checkpoint(&connector.name).await?;
        let due = days_due(now.date_naive(), checkpoint, config.schedule.catch_up_days);
        if let (Some(c), Some(first)) = (checkpoint, due.first()) {
            if c.succ_opt() != Some(*first) {
                tracing::warn!(connector = %connector.name, checkpoint = %c, first = %first,
                    "days between the checkpoint and the catch-up window are left for backfill");
            }
        }
        for day in due {
            if archiver.ledger().is_complete(&connector.name, day).await? {
                continue;
            }
            let results = archiver.run_days(&[day], Some(&connector.name)).await;
            all_complete &= results.iter().all(|r| r.is_complete());
        }
    }
    Ok(all_complete)
}

/// The daemon: catch up now, then at every wake, until `shutdown` turns true.
pub async fn run(
    archiver: &Archiver,
    config: &Config,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let wake = config.schedule.wake();
    loop {
        if *shutdown.borrow() {
            break;
        }
        let complete = catch_up(archiver, config, Utc::now()).await?;
        // Re-read the clock after the work and after every sleep: no drift, no missed day.
        let next = next_wake(Utc::now(), wake);
        tracing::info!(next_wake = %next, all_complete = complete, "sleeping until the next wake");
        let wait = (next - Utc::now()).to_std().unwrap_or_default();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => {}
        }
    }
    tracing::info!("shutting down");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn d(day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, day).unwrap()
    }

    #[test]
    fn due_days_run_from_the_checkpoint_to_yesterday() {
        assert_eq!(days_due(d(21), None, 7), vec![d(20)]);
        assert_eq!(days_due(d(21), Some(d(17)), 7), vec![d(18), d(19), d(20)]);
        assert_eq!(days_due(d(21), Some(d(20)), 7), Vec::<NaiveDate>::new());
        // Down for weeks: only the catch-up window; older days are for backfill.
        assert_eq!(days_due(d(21), Some(d(1)), 3), vec![d(18), d(19), d(20)]);
    }

    #[test]
    fn next_wake_is_strictly_later() {
        let wake = NaiveTime::from_hms_opt(4, 0, 0).unwrap();
        let before = Utc.with_ymd_and_hms(2026, 11, 21, 3, 59, 0).unwrap();
        assert_eq!(
            next_wake(before, wake),
            Utc.with_ymd_and_hms(2026, 11, 21, 4, 0, 0).unwrap()
        );
        let at = Utc.with_ymd_and_hms(2026, 11, 21, 4, 0, 0).unwrap();
        assert_eq!(
            next_wake(at, wake),
            Utc.with_ymd_and_hms(2026, 11, 22, 4, 0, 0).unwrap()
        );
    }
}

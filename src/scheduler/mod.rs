//! The daily wake: every day at the configured time, each connector processes every day from
//! its checkpoint to yesterday (at most `catch_up_days` of them on its own; older days only
//! through `backfill`). Days are UTC days; only the wake time follows a time zone.
//!
//! Connectors run as independent tasks, so one partner's outage never holds another back. A
//! day left open is retried with backoff until the next wake. The wall clock is re-read after
//! every sleep, so the daemon never drifts and is right across DST changes and clock jumps.

use crate::pipeline::{Archiver, DayTurn};
use crate::telemetry::RunState;
use crate::Result;
use chrono::{DateTime, Days, LocalResult, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;

mod backfill;
mod config;

pub use backfill::backfill;
pub use config::ScheduleConfig;

/// Where the scheduler reads the time of day.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Wall time that follows tokio's clock from a fixed start: under tokio's paused time, tests
/// move through days in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    base: DateTime<Utc>,
    start: tokio::time::Instant,
}

impl TokioClock {
    pub fn starting_at(base: DateTime<Utc>) -> Self {
        TokioClock {
            base,
            start: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = tokio::time::Instant::now() - self.start;
        self.base + chrono::Duration::from_std(elapsed).unwrap_or_default()
    }
}

/// Resolves once `stop` is true (immediately if it already is, never if its sender is gone
/// without ever asking).
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Waits between retries of a day left open, until the next wake.
pub const RETRY_BACKOFF_SECS: [u64; 4] = [5 * 60, 15 * 60, 45 * 60, 2 * 60 * 60];

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

/// The next wake strictly after `now`: `wake` on the local calendar of `tz`. A wake time that
/// a DST change skips moves to the first instant after the gap; one that occurs twice is taken
/// the first time.
pub fn next_wake(now: DateTime<Utc>, wake: NaiveTime, tz: Tz) -> DateTime<Utc> {
    let mut date = now.with_timezone(&tz).date_naive();
    loop {
        let local = date.and_time(wake);
        let instant = match tz.from_local_datetime(&local) {
            LocalResult::Single(t) => t,
            LocalResult::Ambiguous(first, _) => first,
            // In a gap: an hour later is past it (no zone skips more than that at once).
            LocalResult::None => {
                match tz.from_local_datetime(&(local + chrono::Duration::hours(1))) {
                    LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => t,
                    LocalResult::None => tz.from_utc_datetime(&local),
                }
            }
        }
        .with_timezone(&Utc);
        if instant > now {
            return instant;
        }
        date = date.succ_opt().expect("dates far from the end of time");
    }
}

/// Processes what is due for every connector at `now`, each connector in its own task.
/// Returns true when every due day is complete.
pub async fn catch_up(
    archiver: &Arc<Archiver>,
    catch_up_days: u32,
    now: DateTime<Utc>,
) -> Result<bool> {
    let mut tasks = JoinSet::new();
    for index in 0..archiver.connectors().len() {
        let archiver = archiver.clone();
        tasks.spawn(async move { connector_catch_up(&archiver, index, catch_up_days, now).await });
    }
    let mut all_complete = true;
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(complete)) => all_complete &= complete,
            Ok(Err(e)) => {
                all_complete = false;
                first_error.get_or_insert(e);
            }
            Err(e) => {
                all_complete = false;
                tracing::error!(error = %e, "a connector task ended abnormally");
            }
        }
    }
    match first_error {
        // Every connector had its chance; the first hard error is reported.
        Some(e) => Err(e),
        None => Ok(all_complete),
    }
}

async fn connector_catch_up(
    archiver: &Archiver,
    index: usize,
    catch_up_days: u32,
    now: DateTime<Utc>,
) -> Result<bool> {
    let connector = &archiver.connectors()[index];
    let checkpoint = archiver.ledger().checkpoint(&connector.name).await?;
    let due = days_due(now.date_naive(), checkpoint, catch_up_days);
    if let (Some(c), Some(first)) = (checkpoint, due.first()) {
        if c.succ_opt() != Some(*first) {
            tracing::warn!(connector = %connector.name, checkpoint = %c, first = %first,
                "days between the checkpoint and the catch-up window are left for backfill");
        }
    }
    // Days behind the checkpoint where the SMTP intake kept messages come first.
    let behind = crate::intake::store::days_behind(archiver.stage().as_ref(), &connector.name)
        .await
        .map_err(crate::Error::State)?;
    let window = due;
    let due: Vec<NaiveDate> = behind
        .into_iter()
        .filter(|d| !window.contains(d))
        .chain(window.iter().copied())
        .collect();
    // A day another daemon holds is shared once this daemon's own days are done, so that
    // daemons sharing a stage collect different days at once.
    let mut complete = true;
    let mut held_elsewhere = Vec::new();
    for day in due {
        if archiver.is_shutting_down() {
            return Ok(false);
        }
        if archiver.ledger().is_complete(&connector.name, day).await? {
            continue;
        }
        match archiver.take_day(connector, day).await? {
            DayTurn::Ran(log) => complete &= log.complete,
            DayTurn::HeldElsewhere(holder) => held_elsewhere.push((day, holder)),
        }
    }
    for (day, holder) in held_elsewhere {
        if archiver.is_shutting_down() {
            return Ok(false);
        }
        complete &= archiver
            .help_with_day(connector, day, holder)
            .await?
            .complete;
    }
    Ok(complete)
}

/// The daemon: catch up now, then at every wake (and between wakes while a day stays open,
/// with backoff), until `shutdown` turns true. In-flight work then gets
/// `schedule.shutdown_timeout_secs` to finish; what does not is left for the next run.
pub async fn run(
    archiver: Arc<Archiver>,
    config: &ScheduleConfig,
    clock: Arc<dyn Clock>,
    mut shutdown: watch::Receiver<bool>,
    state: Arc<RunState>,
) -> Result<()> {
    let (wake, tz, grace) = (config.wake_time, config.time_zone, config.grace());
    let mut retries = 0usize;
    // Whether this run is a wake (the start counts as one), not a retry of an open day.
    let mut at_wake = true;
    loop {
        if *shutdown.borrow() {
            break;
        }
        let started = clock.now();
        state.started(started);
        let work = catch_up(&archiver, config.catch_up_days, started);
        tokio::pin!(work);
        let outcome = tokio::select! {
            outcome = &mut work => outcome,
            _ = stopped(&mut shutdown) => {
                tracing::info!(grace_secs = grace.as_secs(), "shutdown requested; letting in-flight work finish");
                match tokio::time::timeout(grace, &mut work).await {
                    Ok(outcome) => { state.finished(clock.now(), &outcome); outcome?; }
                    Err(_) => tracing::warn!("in-flight work did not finish in time; the next run redoes it"),
                }
                break;
            }
        };
        state.finished(clock.now(), &outcome);
        // At each wake, the held copies of the catch-up window are tried again (a mapping
        // fixed since brings them home), then one digest goes out: one per wake, not one
        // after each retry of an open day (the next wake's digest lists a day still open).
        if at_wake {
            let window: Vec<NaiveDate> = (1..=u64::from(config.catch_up_days))
                .rev()
                .filter_map(|back| started.date_naive().checked_sub_days(Days::new(back)))
                .collect();
            let redrive = archiver.redrive_days(&window, None);
            tokio::pin!(redrive);
            tokio::select! {
                _ = &mut redrive => {}
                // A re-drive cut short leaves its copies held: the next wake tries again.
                _ = stopped(&mut shutdown) => {
                    let _ = tokio::time::timeout(grace, &mut redrive).await;
                    break;
                }
            }
            archiver.send_digest(&window, started).await;
        }
        let complete = match outcome {
            Ok(complete) => complete,
            Err(e) => {
                tracing::error!(error = %e, "the run could not finish; retrying");
                false
            }
        };
        let now = clock.now();
        let wake_at = next_wake(now, wake, tz);
        let until = if complete {
            retries = 0;
            wake_at
        } else {
            let backoff = RETRY_BACKOFF_SECS[retries.min(RETRY_BACKOFF_SECS.len() - 1)];
            retries += 1;
            let at = wake_at.min(now + chrono::Duration::seconds(backoff as i64));
            crate::events::Retry {
                side: "scheduler",
                kind: "open_day",
                what: "days are left open; running them again".into(),
                detail: format!("next run at {at}"),
                scope: "every connector",
                attempt: retries,
                wait: (at - now).to_std().unwrap_or_default(),
            }
            .emit();
            at
        };
        at_wake = until == wake_at;
        tracing::info!(next_run = %until, all_complete = complete, "sleeping");
        // Sleep in steps of at most an hour and re-read the clock: a clock that jumps (NTP,
        // a suspended VM) is noticed within the hour.
        while clock.now() < until && !*shutdown.borrow() {
            let step = (until - clock.now())
                .to_std()
                .unwrap_or_default()
                .min(Duration::from_secs(3600));
            tokio::select! {
                _ = tokio::time::sleep(step) => {}
                _ = shutdown.changed() => {}
            }
        }
    }
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
            next_wake(before, wake, Tz::UTC),
            Utc.with_ymd_and_hms(2026, 11, 21, 4, 0, 0).unwrap()
        );
        let at = Utc.with_ymd_and_hms(2026, 11, 21, 4, 0, 0).unwrap();
        assert_eq!(
            next_wake(at, wake, Tz::UTC),
            Utc.with_ymd_and_hms(2026, 11, 22, 4, 0, 0).unwrap()
        );
    }

    #[test]
    fn wakes_follow_local_time_across_dst() {
        let london: Tz = "Europe/London".parse().unwrap();
        let four = NaiveTime::from_hms_opt(4, 0, 0).unwrap();
        // BST ends on 2026-10-25: 04:00 local is 03:00Z before and 04:00Z after.
        let sat = Utc.with_ymd_and_hms(2026, 10, 24, 12, 0, 0).unwrap();
        assert_eq!(
            next_wake(sat, four, london),
            Utc.with_ymd_and_hms(2026, 10, 25, 4, 0, 0).unwrap()
        );
        let fri = Utc.with_ymd_and_hms(2026, 10, 23, 12, 0, 0).unwrap();
        assert_eq!(
            next_wake(fri, four, london),
            Utc.with_ymd_and_hms(2026, 10, 24, 3, 0, 0).unwrap()
        );
        // 01:30 happens twice on 2026-10-25 (taken the first time) and not at all on
        // 2026-03-29 (moved past the gap).
        let half_one = NaiveTime::from_hms_opt(1, 30, 0).unwrap();
        assert_eq!(
            next_wake(sat, half_one, london),
            Utc.with_ymd_and_hms(2026, 10, 25, 0, 30, 0).unwrap()
        );
        let spring = Utc.with_ymd_and_hms(2026, 3, 28, 12, 0, 0).unwrap();
        assert_eq!(
            next_wake(spring, half_one, london),
            Utc.with_ymd_and_hms(2026, 3, 29, 1, 30, 0).unwrap()
        );
    }
}

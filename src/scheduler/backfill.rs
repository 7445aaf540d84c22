//! `backfill`: every day of a range that is not complete yet, resumable after an
//! interruption.

use crate::pipeline::{Archiver, DayResult};
use chrono::NaiveDate;
use std::io::IsTerminal;

/// Every connector-day from `from` to `to` that is not complete yet, oldest first, with a
/// progress bar on a terminal and plain log lines otherwise.
pub async fn backfill(
    archiver: &Archiver,
    from: NaiveDate,
    to: NaiveDate,
    only: Option<&str>,
) -> Vec<DayResult> {
    let days: Vec<NaiveDate> = from.iter_days().take_while(|d| *d <= to).collect();
    let connectors: Vec<&str> = archiver
        .connectors()
        .iter()
        .map(|c| c.name.as_str())
        .filter(|n| only.is_none_or(|o| o == *n))
        .collect();
    let total = (days.len() * connectors.len()) as u64;
    let bar = if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(total);
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} connector-days {msg}")
        {
            bar.set_style(style);
        }
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut results = Vec::new();
    for name in connectors {
        for &day in &days {
            bar.set_message(format!("{name} {day}"));
            let done = archiver
                .ledger()
                .is_complete(name, day)
                .await
                .unwrap_or(false);
            if done {
                tracing::info!(connector = name, day = %day, "already complete; skipped");
            } else {
                results.extend(archiver.run_days(&[day], Some(name)).await);
            }
            bar.inc(1);
            if archiver.is_shutting_down() {
                bar.abandon_with_message("interrupted; run the same backfill again to resume");
                return results;
            }
        }
    }
    bar.finish_with_message("done");
    results
}

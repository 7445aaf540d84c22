//! What `once` and `backfill` print on stdout when they end: per connector-day the day's
//! counts (its reconciliation over every run), where the messages went, what needs a person,
//! and the `report` command that shows more. The per-item lines stay in the log (stderr).

use crate::config::Config;
use crate::pipeline::{Archiver, DayResult};
use crate::report::{counted, StatusLog};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The summary of a run over `results`.
pub(super) async fn summary(config: &Config, archiver: &Archiver, results: &[DayResult]) -> String {
    let mut out = String::new();
    for result in results {
        let (name, day) = (&result.connector, result.day);
        let more = format!(
            "comms-archiver report --config {} --date {day} --connector {name}",
            config.file.display()
        );
        let run = match &result.log {
            Ok(log) => log,
            Err(e) => {
                let _ = writeln!(
                    out,
                    "{name} {day}: could not be finished ({e}); the next run retries it"
                );
                continue;
            }
        };
        // The day as a whole when its reconciliation can be had, else this run's own log.
        let day_log = match archiver.ledger().reconcile(name, day).await {
            Ok(Some(log)) => log,
            _ => run.clone(),
        };
        let _ = writeln!(out, "{}", headline(&day_log, run));
        if let Some(destination) = &run.destination {
            let _ = writeln!(out, "  into {destination}");
        }
        if let Some(attention) = needs_a_person(&day_log) {
            let _ = writeln!(out, "  needs a person: {attention}");
        }
        let _ = writeln!(out, "  more: {more}");
    }
    out
}

fn headline(day: &StatusLog, run: &StatusLog) -> String {
    let state = match (day.complete, run.errors.first()) {
        (true, _) => "complete".to_string(),
        (false, Some(e)) => format!("OPEN ({}): retried on the next run", e.reason),
        (false, None) => "OPEN: retried on the next run".to_string(),
    };
    let mut line = format!(
        "{} {}: {state}; {} from the partner, {}: {} imported",
        day.connector,
        day.day,
        counted(day.available_from_source, "item", "items"),
        counted(day.available_for_import, "copy", "copies"),
        day.imported
    );
    for (n, what) in [
        (day.partially_imported, "partially imported"),
        (day.skipped_duplicates, "skipped (duplicates)"),
        (day.held, "held"),
        (day.failed, "failed"),
        (day.excluded, "excluded"),
    ] {
        if n > 0 {
            let _ = write!(line, ", {n} {what}");
        }
    }
    if day.runs.len() > 1 {
        let _ = write!(
            line,
            " (over {} runs; this one imported {})",
            day.runs.len(),
            run.imported
        );
    }
    line
}

/// What of the day needs a person, in a few words, or None.
fn needs_a_person(day: &StatusLog) -> Option<String> {
    let mut parts = Vec::new();
    let mut held: BTreeMap<&str, usize> = BTreeMap::new();
    for h in &day.held_copies {
        *held.entry(h.reason.as_str()).or_default() += 1;
    }
    if !held.is_empty() {
        let reasons: Vec<String> = held.iter().map(|(r, n)| format!("{n} {r}")).collect();
        parts.push(format!(
            "{} held ({}), delivered by `redrive` once the cause is fixed",
            day.held_copies.len(),
            reasons.join(", ")
        ));
    }
    let for_good = day
        .failures
        .iter()
        .filter(|f| !f.reason.is_retried())
        .count();
    if for_good > 0 {
        parts.push(format!("{for_good} failed for good"));
    }
    if !day.unmapped_users.is_empty() {
        let n = day.unmapped_users.len() as u64;
        parts.push(counted(n, "unmapped user", "unmapped users"));
    }
    for e in &day.errors {
        parts.push(format!("{}: {}", e.reason, e.detail));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

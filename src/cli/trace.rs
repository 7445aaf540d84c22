//! `trace`: one item's way through the archive, from the evidence: each copy's import record
//! (mailbox, folder, how it was mapped, stage key, SHA-256, when and in which run), and what
//! each run of the days around it did with it.

use super::{check_connector, ReportFormat, EXIT_DONE, EXIT_RETRY};
use crate::config::Config;
use crate::item::ItemKey;
use crate::ledger::{ImportRecord, Ledger};
use crate::report::StatusLog;
use crate::Result;
use chrono::{Days, NaiveDate};
use serde::Serialize;
use std::fmt::Write as _;

/// What the evidence says of one item in one connector.
#[derive(Debug, Serialize)]
struct Trace {
    connector: String,
    item_key: String,
    message_id: String,
    /// The partner's id, when a record says it.
    item_id: Option<String>,
    copies: Vec<ImportRecord>,
    runs: Vec<RunTrace>,
}

/// One run of a day around the item's, and what it did with the item.
#[derive(Debug, Serialize)]
struct RunTrace {
    day: NaiveDate,
    run: String,
    /// "imported into <mailbox>", "failed <reason> for <mailbox>: <detail>", "excluded ...".
    did: Vec<String>,
}

/// An id as given, without the angle brackets a Message-ID may come with.
fn bare(id: &str) -> &str {
    id.trim().trim_start_matches('<').trim_end_matches('>')
}

/// The item key `id` names in `connector`: the key itself, our Message-ID, or the partner's
/// item id (a Merge1 item's id is its Message-ID).
fn key_of(connector: &str, id: &str) -> ItemKey {
    let bare = bare(id);
    if let Some(key) = bare.strip_suffix("@comms-archiver.invalid") {
        return ItemKey::from_hex(key);
    }
    if bare.len() == 32 && bare.bytes().all(|b| b.is_ascii_hexdigit()) {
        return ItemKey::from_hex(&bare.to_ascii_lowercase());
    }
    ItemKey::new(connector, bare)
}

pub(super) async fn trace(
    config: &Config,
    id: &str,
    date: NaiveDate,
    only: Option<&str>,
    format: ReportFormat,
) -> Result<i32> {
    check_connector(config, only)?;
    let ledger = Ledger::new(crate::stage::build(&config.stage, &config.secrets())?);
    let days: Vec<NaiveDate> = (0..5)
        .filter_map(|i| {
            date.checked_sub_days(Days::new(2))?
                .checked_add_days(Days::new(i))
        })
        .collect();
    let mut found = Vec::new();
    for (name, _) in config
        .enabled_connectors()
        .filter(|(n, _)| only.is_none_or(|c| c == *n))
    {
        let key = key_of(name, id);
        let mut logs = Vec::new();
        for day in &days {
            logs.extend(ledger.run_logs(name, *day).await?);
        }
        // Import records are kept under the items' dates: around the day, and those the
        // runs of these days read.
        let mut dates: std::collections::BTreeSet<NaiveDate> = days.iter().copied().collect();
        dates.extend(logs.iter().flat_map(|l| l.item_dates.iter().copied()));
        let mut copies = Vec::new();
        for date in dates {
            copies.extend(
                ledger
                    .import_records(name, date)
                    .await?
                    .into_iter()
                    .filter(|r| r.item_key == key.as_str()),
            );
        }
        let item_id = copies
            .first()
            .map(|r| r.item_id.clone())
            .or_else(|| (ItemKey::new(name, bare(id)) == key).then(|| bare(id).to_string()));
        let mut runs = Vec::new();
        for log in &logs {
            let did = what_the_run_did(log, &copies, item_id.as_deref());
            if let Some(run) = log.run.as_ref().filter(|_| !did.is_empty()) {
                runs.push(RunTrace {
                    day: log.day,
                    run: run.id.clone(),
                    did,
                });
            }
        }
        if !copies.is_empty() || !runs.is_empty() {
            found.push(Trace {
                connector: name.to_string(),
                item_key: key.to_string(),
                message_id: key.message_id(),
                item_id,
                copies,
                runs,
            });
        }
    }
    if found.is_empty() {
        eprintln!(
            "no import record or run log of {} to {} mentions '{id}'; give the day the item \
             was delivered for with --date",
            days[0],
            days[days.len() - 1]
        );
        return Ok(EXIT_RETRY);
    }
    match format {
        ReportFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&found).unwrap_or_default()
        ),
        _ => found.iter().for_each(|t| print!("{}", readable(t))),
    }
    Ok(EXIT_DONE)
}

/// The run's imports (by its import records) and failures or exclusions (by its log) of the
/// item.
fn what_the_run_did(
    log: &StatusLog,
    copies: &[ImportRecord],
    item_id: Option<&str>,
) -> Vec<String> {
    let run = log.run.as_ref().map(|r| r.id.as_str());
    let mut did: Vec<String> = copies
        .iter()
        .filter(|c| c.run.as_deref() == run && run.is_some())
        .map(|c| format!("recorded the copy for {} as imported", c.mailbox))
        .collect();
    if let Some(item_id) = item_id {
        for f in log.failures.iter().filter(|f| f.item_id == item_id) {
            let mailbox = f.mailbox.as_deref().unwrap_or("no mailbox");
            did.push(format!(
                "failed {} for {mailbox}: {}",
                f.reason.as_str(),
                f.detail
            ));
        }
        for h in log.held_copies.iter().filter(|h| h.item_id == item_id) {
            let whom = match &h.mailbox {
                Some(mailbox) => format!("for {mailbox}"),
                None => format!("for {} (no mailbox)", h.source_user),
            };
            let filed = match &h.filed_in {
                Some(catch_all) => format!("; filed in {catch_all} meanwhile"),
                None => String::new(),
            };
            did.push(format!(
                "held {} {whom}: {}{filed}; kept at {}",
                h.reason.as_str(),
                h.detail,
                h.kept
            ));
        }
        for x in log.exclusions.iter().filter(|x| x.item_id == item_id) {
            did.push(format!("excluded {}: {}", x.reason, x.detail));
        }
    }
    if let Some(kind) = log.run.as_ref().map(|r| r.kind) {
        if kind == crate::report::RunKind::Redrive && !did.is_empty() {
            did.insert(0, "re-drove its held copies".to_string());
        }
    }
    // A run of the copies' day that read its whole delivery and did nothing of the above
    // met the copies imported already.
    let read_them = log.errors.is_empty() && copies.iter().any(|c| c.day == log.day);
    if did.is_empty() && read_them && !copies.is_empty() {
        did.push("skipped it: its copies were imported already".to_string());
    }
    did
}

fn readable(t: &Trace) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} item {} (key {}, Message-ID {})",
        t.connector,
        t.item_id.as_deref().unwrap_or("?"),
        t.item_key,
        t.message_id
    );
    for c in &t.copies {
        let _ = writeln!(
            out,
            "  copy for {}, folder '{}', in {}, delivered for {}",
            c.mailbox,
            c.folder,
            c.destination
                .as_deref()
                .unwrap_or("an unrecorded destination"),
            c.day
        );
        let _ = writeln!(
            out,
            "    mapped by {}",
            c.mapped_by.as_deref().unwrap_or("(not recorded)")
        );
        let _ = writeln!(
            out,
            "    staged {} ({} bytes, SHA-256 {})",
            c.staged, c.bytes, c.sha256
        );
        let _ = writeln!(
            out,
            "    imported {} by run {}",
            c.imported_at.format("%Y-%m-%d %H:%M:%S UTC"),
            c.run.as_deref().unwrap_or("(not recorded)")
        );
        for f in &c.left_out {
            let _ = writeln!(
                out,
                "    partially imported: left out {} ({}, {} bytes, SHA-256 {}), kept at {}",
                f.name, f.content_type, f.bytes, f.sha256, f.kept
            );
        }
    }
    for r in &t.runs {
        for did in &r.did {
            let _ = writeln!(out, "  {} run {}: {did}", r.day, r.run);
        }
    }
    out
}

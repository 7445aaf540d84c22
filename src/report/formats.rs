//! The status log written out: CSV (one header, a row per fact) and a few readable lines
//! for a terminal. JSON is the log's own serialization.

use super::{counted, StatusLog};
use chrono::{DateTime, Utc};
use std::fmt::Write as _;

/// A time as the JSON writes it (RFC 3339 in UTC with `Z`), so the CSV reads the same.
fn json_time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

impl StatusLog {
    /// CSV: one `summary` row, then a row per destination, run, way of mapping, failure,
    /// held copy, file left out, re-driven item, exclusion, unmapped user and day-level
    /// problem, all under one header; times as the JSON writes them.
    pub fn to_csv(&self) -> String {
        let mut w = csv::Writer::from_writer(Vec::new());
        let write = |w: &mut csv::Writer<Vec<u8>>, row: &[&str]| {
            w.write_record(row).expect("writing to memory");
        };
        write(
            &mut w,
            &[
                "record",
                "connector",
                "day",
                "completed_at",
                "complete",
                "available_from_source",
                "available_for_import",
                "imported",
                "partially_imported",
                "skipped_duplicates",
                "failed",
                "item_id",
                "source_user",
                "mailbox",
                "reason",
                "detail",
                "held",
                "excluded",
            ],
        );
        let day = self.day.to_string();
        let numbers = [
            self.available_from_source,
            self.available_for_import,
            self.imported,
            self.partially_imported,
            self.skipped_duplicates,
            self.failed,
        ]
        .map(|n| n.to_string());
        let completed = json_time(&self.completed_at);
        let complete = self.complete.to_string();
        let mut summary = vec!["summary", &self.connector, &day, &completed, &complete];
        summary.extend(numbers.iter().map(String::as_str));
        summary.extend(["", "", "", "", self.summary.as_deref().unwrap_or("")]);
        let (held, excluded) = (self.held.to_string(), self.excluded.to_string());
        summary.extend([held.as_str(), excluded.as_str()]);
        write(&mut w, &summary);
        // Detail rows leave the summary columns empty.
        let detail_row = |w: &mut csv::Writer<Vec<u8>>, kind: &str, tail: [&str; 5]| {
            let mut row = vec![kind, &self.connector, &day];
            row.extend([""; 8]);
            row.extend(tail);
            row.extend(["", ""]);
            write(w, &row);
        };
        if let Some(destination) = &self.destination {
            detail_row(&mut w, "destination", ["", "", "", "", destination]);
        }
        if let Some(run) = &self.run {
            let detail = format!(
                "{} to {} on {}, version {}{}",
                json_time(&run.started_at),
                json_time(&run.ended_at),
                run.host,
                run.version,
                match run.stopped_by.is_empty() {
                    true => String::new(),
                    false => format!(", stopped by {}", run.stopped_by.join(" ")),
                }
            );
            detail_row(&mut w, "run", ["", "", "", &run.id, &detail]);
        }
        for run in &self.runs {
            detail_row(&mut w, "run", ["", "", "", run, ""]);
        }
        for (way, copies) in &self.mapped_by {
            detail_row(&mut w, "mapped_by", ["", "", "", way, &copies.to_string()]);
        }
        for f in &self.failures {
            let mailbox = f.mailbox.as_deref().unwrap_or("");
            let tail = [
                f.item_id.as_str(),
                &f.source_user,
                mailbox,
                f.reason.as_str(),
                &f.detail,
            ];
            detail_row(&mut w, "failure", tail);
        }
        for h in &self.held_copies {
            let detail = match &h.filed_in {
                Some(catch_all) => {
                    format!("{}; a copy is filed in {catch_all} meanwhile", h.detail)
                }
                None => h.detail.clone(),
            };
            let mailbox = h.mailbox.as_deref().unwrap_or("");
            let tail = [
                h.item_id.as_str(),
                &h.source_user,
                mailbox,
                h.reason.as_str(),
                &detail,
            ];
            detail_row(&mut w, "held", tail);
        }
        for p in &self.partial_imports {
            for f in &p.left_out {
                let detail = format!(
                    "left out {} ({}, {} bytes, SHA-256 {}), kept at {}",
                    f.name, f.content_type, f.bytes, f.sha256, f.kept
                );
                detail_row(&mut w, "partial", [&p.item_id, "", &p.mailbox, "", &detail]);
            }
        }
        for r in &self.redriven {
            let detail = format!(
                "imported into {}; already in {}",
                r.delivered.join(" "),
                r.already.join(" ")
            );
            detail_row(&mut w, "redriven", [&r.item_id, "", "", "", &detail]);
        }
        for x in &self.exclusions {
            detail_row(
                &mut w,
                "exclusion",
                [&x.item_id, "", "", &x.reason, &x.detail],
            );
        }
        for user in &self.unmapped_users {
            let held = counted(self.held_for(user) as u64, "copy held", "copies held");
            detail_row(&mut w, "unmapped_user", ["", user, "", "", &held]);
        }
        for e in &self.errors {
            detail_row(&mut w, "error", ["", "", "", &e.reason, &e.detail]);
        }
        String::from_utf8(w.into_inner().expect("writing to memory")).expect("CSV of UTF-8")
    }

    /// A few readable lines for a terminal.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} {}  {}  (run ended {})",
            self.connector,
            self.day,
            if self.complete {
                "complete"
            } else {
                "OPEN: retried on the next run"
            },
            self.completed_at.format("%Y-%m-%d %H:%M:%S UTC")
        );
        if let Some(summary) = &self.summary {
            let _ = writeln!(out, "  {summary}");
        }
        match &self.run {
            Some(run) => {
                let _ = writeln!(
                    out,
                    "  run {} on {} (version {}), {} to {}{}",
                    run.id,
                    run.host,
                    run.version,
                    run.started_at.format("%H:%M:%S"),
                    run.ended_at.format("%H:%M:%S UTC"),
                    match run.stopped_by.is_empty() {
                        true => String::new(),
                        false => format!(", stopped by {}", run.stopped_by.join(", ")),
                    }
                );
            }
            None if !self.runs.is_empty() => {
                let _ = writeln!(
                    out,
                    "  the day over {}: {}",
                    counted(self.runs.len() as u64, "run", "runs"),
                    self.runs.join(", ")
                );
            }
            None => {}
        }
        for (label, n) in [
            ("available from source", self.available_from_source),
            ("available for import", self.available_for_import),
            ("imported", self.imported),
            ("partially imported", self.partially_imported),
            ("skipped (duplicates)", self.skipped_duplicates),
            ("failed", self.failed),
            ("held", self.held),
            ("excluded", self.excluded),
        ] {
            let _ = writeln!(out, "  {label:<22} {n:>8}");
        }
        if !self.mapped_by.is_empty() {
            let ways: Vec<String> = self
                .mapped_by
                .iter()
                .map(|(way, n)| format!("{n} by {}", way.replace('_', " ")))
                .collect();
            let _ = writeln!(out, "  imported copies mapped {}", ways.join(", "));
        }
        for f in &self.failures {
            let _ = writeln!(
                out,
                "  failed  {:<14} item {}  user {}  mailbox {}  {}",
                f.reason.as_str(),
                f.item_id,
                f.source_user,
                f.mailbox.as_deref().unwrap_or("-"),
                f.detail
            );
        }
        for h in &self.held_copies {
            let _ = writeln!(
                out,
                "  held    {:<14} item {}  user {}  mailbox {}  {}{}",
                h.reason.as_str(),
                h.item_id,
                h.source_user,
                h.mailbox.as_deref().unwrap_or("-"),
                h.detail,
                h.filed_in
                    .as_deref()
                    .map(|c| format!("; filed in {c} meanwhile"))
                    .unwrap_or_default()
            );
        }
        for p in &self.partial_imports {
            for f in &p.left_out {
                let _ = writeln!(
                    out,
                    "  partial item {}  mailbox {}  left out {} ({}, {} bytes, SHA-256 {}) kept at {}",
                    p.item_id, p.mailbox, f.name, f.content_type, f.bytes, f.sha256, f.kept
                );
            }
        }
        for r in &self.redriven {
            let _ = writeln!(
                out,
                "  redriven item {}  imported into {}{}",
                r.item_id,
                match r.delivered.is_empty() {
                    true => "-".to_string(),
                    false => r.delivered.join(", "),
                },
                match r.already.is_empty() {
                    true => String::new(),
                    false => format!("; already in {}", r.already.join(", ")),
                }
            );
        }
        for user in &self.unmapped_users {
            let _ = writeln!(
                out,
                "  unmapped {user}: {} held until the mapping is fixed",
                counted(self.held_for(user) as u64, "copy", "copies")
            );
        }
        for x in &self.exclusions {
            let _ = writeln!(
                out,
                "  excluded {:<13} item {}  {}",
                x.reason, x.item_id, x.detail
            );
        }
        for e in &self.errors {
            let _ = writeln!(out, "  error   {:<14} {}", e.reason, e.detail);
        }
        out
    }
}

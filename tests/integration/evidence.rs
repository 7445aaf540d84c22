//! Evidence is written once: staged messages, import records, run logs and held items are
//! never rewritten or deleted by a run, a crash, a re-run, a re-drive or a later run over the
//! same day, and the day's reconciliation counts every copy once over all of its runs.

use crate::support::*;
use async_trait::async_trait;
use comms_archiver::pipeline::Archiver;
use comms_archiver::stage::{is_evidence, Created, LocalStage, Stage, StageError, Version};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A local stage that records every write, by key: the operation and whether it changed
/// the object.
struct Recording {
    inner: LocalStage,
    writes: Mutex<BTreeMap<String, Vec<&'static str>>>,
}

impl Recording {
    fn note(&self, key: &str, what: &'static str) {
        let mut writes = self.writes.lock().unwrap();
        writes.entry(key.to_string()).or_default().push(what);
    }
}

#[async_trait]
impl Stage for Recording {
    async fn put_new(&self, key: &str, bytes: &[u8]) -> Result<Created, StageError> {
        let created = self.inner.put_new(key, bytes).await?;
        if created == Created::New {
            self.note(key, "created");
        }
        Ok(created)
    }
    async fn put(&self, key: &str, bytes: &[u8]) -> Result<(), StageError> {
        self.note(key, "replaced");
        self.inner.put(key, bytes).await
    }
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StageError> {
        self.inner.get(key).await
    }
    async fn get_versioned(&self, key: &str) -> Result<Option<(Vec<u8>, Version)>, StageError> {
        self.inner.get_versioned(key).await
    }
    async fn put_if(
        &self,
        key: &str,
        bytes: &[u8],
        expected: Option<&Version>,
    ) -> Result<Option<Version>, StageError> {
        let written = self.inner.put_if(key, bytes, expected).await?;
        if written.is_some() {
            self.note(key, "swapped");
        }
        Ok(written)
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StageError> {
        self.inner.list(prefix).await
    }
    fn describe(&self) -> String {
        "recording stage".into()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_evidence_is_written_twice_through_a_crash_two_reruns_and_a_redrive() {
    comms_archiver::install_crypto_provider();
    let ws = workspace();
    let dir = ws.path();
    let config = demo_config(dir);
    let stage = Arc::new(Recording {
        inner: LocalStage::new(dir.join("var/stage")),
        writes: Mutex::default(),
    });
    let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();

    // A run that stops answering after 5 copies and is dropped there, as a crash leaves it
    // (the gate never opens).
    let (stalls, _shut) = gated::GatedMaildir::new(dir.join("var/mail"), 5);
    let crashing = Archiver::from_config(&config)
        .unwrap()
        .with_stage(stage.clone())
        .with_mailbox(stalls);
    let crashed = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        crashing.run_days(&[day], Some("o2")),
    )
    .await;
    assert!(crashed.is_err(), "the run was to be cut short");
    drop(crashing);

    // The re-run finishes the day; a later run finds every copy imported already.
    let archiver = Archiver::from_config(&config)
        .unwrap()
        .with_stage(stage.clone());
    let rerun = archiver.run_days(&[day], Some("o2")).await;
    assert!(rerun[0].is_complete(), "{:?}", rerun[0].log);
    let again = archiver.run_days(&[day], Some("o2")).await;
    let again = again[0].log.as_ref().unwrap();
    assert_eq!(again.imported, 0, "{again:?}");

    // The mapping CSV gains the unmapped number: a re-drive delivers its held copy.
    let csv = dir.join("config/mapping-o2.csv");
    let rows = std::fs::read_to_string(&csv).unwrap() + "+447700900199,desk3@contoso.com,,\n";
    std::fs::write(&csv, rows).unwrap();
    let archiver = Archiver::from_config(&demo_config(dir))
        .unwrap()
        .with_stage(stage.clone());
    let redriven = archiver.redrive_days(&[day], Some("o2")).await;
    let redriven = redriven[0].log.as_ref().unwrap().as_ref().unwrap();
    assert_eq!(redriven.imported, 1, "{redriven:?}");

    let writes = stage.writes.lock().unwrap().clone();
    let evidence: Vec<_> = writes.iter().filter(|(k, _)| is_evidence(k)).collect();
    assert!(evidence.iter().any(|(k, _)| k.starts_with("staged/o2/")));
    assert!(evidence
        .iter()
        .any(|(k, _)| k.starts_with("ledger/o2/journal/")));
    assert_eq!(
        evidence
            .iter()
            .filter(|(k, _)| k.starts_with("runs/o2/"))
            .count(),
        3,
        "one run log per run that ended: {evidence:?}"
    );
    assert!(evidence.iter().any(|(k, _)| k.starts_with("held/o2/")));
    for (key, ops) in &evidence {
        assert_eq!(ops.as_slice(), ["created"], "{key} was written {ops:?}");
    }
    // What changes is state, and only state is replaced.
    assert!(writes
        .iter()
        .any(|(k, ops)| !is_evidence(k) && ops.iter().any(|o| *o != "created")));

    // The reconciliation counts every copy of the day once, over both runs: as an
    // uninterrupted day does, and as the Maildir holds them.
    let ledger = archiver.ledger();
    let day_log = ledger.reconcile("o2", day).await.unwrap().unwrap();
    assert_eq!(day_log.runs.len(), 3, "{day_log:?}");
    let clean_ws = workspace();
    demo_day(clean_ws.path(), &[]);
    let clean = &demo_logs(clean_ws.path())["o2"];
    for (what, got, want) in [
        (
            "available",
            day_log.available_for_import,
            clean.available_for_import,
        ),
        ("imported", day_log.imported, clean.imported + 1),
        (
            "skipped",
            day_log.skipped_duplicates,
            clean.skipped_duplicates,
        ),
        ("failed", day_log.failed, clean.failed),
        ("held", day_log.held, clean.held - 1),
    ] {
        assert_eq!(got, want, "{what}: {day_log:?}");
    }
    let in_maildir: usize = counts(&dir.join("var/mail"), FOLDER)
        .iter()
        .map(|(_, n)| n)
        .sum();
    assert_eq!(in_maildir as u64, day_log.imported);
    assert!(day_log.adds_up() && day_log.complete);
    // The later run's own log says what it did: nothing new.
    assert_eq!(
        again.skipped_duplicates,
        clean.imported + clean.skipped_duplicates
    );
}

/// `trace` finds an item by its partner id, its Message-ID and its key alike, and prints each
/// copy's way from the evidence; a reconciliation whose evidence is gone does not add up, and
/// says so instead of adjusting a number.
#[test]
fn trace_follows_an_item_and_a_broken_record_is_an_error() {
    let ws = workspace();
    let dir = ws.path();
    demo_day(dir, &[]);
    let trace = |id: &str| {
        let args = [
            "trace",
            id,
            "--config",
            "config/demo.toml",
            "--date",
            DEMO_DATE,
        ];
        cli(dir, &[&args[..], &["--connector", "o2"]].concat())
    };
    let by_id = finished(trace("O2-20261120-0001"));
    let text = String::from_utf8_lossy(&by_id.stdout).to_string();
    assert!(text.contains("copy for alice.smith@contoso.com"), "{text}");
    assert!(
        text.contains("mapped by mapping CSV config/mapping-o2.csv line 4"),
        "{text}"
    );
    // The staged message is the one the record names, with the SHA-256 it gives.
    let staged = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("staged "))
        .and_then(|l| l.split(' ').next())
        .unwrap()
        .to_string();
    let bytes = std::fs::read(dir.join("var/stage").join(&staged)).unwrap();
    let sha = comms_archiver::item::sha256_hex(&bytes);
    assert!(text.contains(&format!("SHA-256 {sha}")), "{text}");
    let run = &run_logs(dir, "o2", DEMO_DATE)[0]["run"]["id"];
    assert!(
        text.contains(&format!("by run {}", run.as_str().unwrap())),
        "{text}"
    );
    let key = comms_archiver::item::ItemKey::new("o2", "O2-20261120-0001");
    for other in [key.message_id(), key.to_string()] {
        assert_eq!(finished(trace(&other)).stdout, by_id.stdout, "{other}");
    }
    assert_eq!(trace("O2-19990101-0001").status.code(), Some(1));

    // Without the import records, the runs' counts cannot be reconciled: an error.
    std::fs::remove_dir_all(dir.join("var/stage/ledger/o2/journal")).unwrap();
    let args = [
        "report",
        "--config",
        "config/demo.toml",
        "--date",
        DEMO_DATE,
    ];
    let out = cli(dir, &[&args[..], &["--connector", "o2"]].concat());
    assert_eq!(out.status.code(), Some(1));
    let error = String::from_utf8_lossy(&out.stderr);
    assert!(error.contains("does not add up"), "{error}");
}

/// `report --format html` writes one self-contained page of the days: a chart per
/// connector, the open days, the failures with their reasons, the unmapped users.
#[test]
fn the_html_report_shows_the_days_as_the_reconciliation_has_them() {
    let ws = workspace();
    let dir = ws.path();
    demo_day(dir, &[]);
    // The 21st was never delivered: an open day.
    let args = [
        "once",
        "--config",
        "config/demo.toml",
        "--date",
        "2026-11-21",
    ];
    assert_eq!(
        cli(dir, &[&args[..], &["--connector", "o2"]].concat())
            .status
            .code(),
        Some(1)
    );
    let args = ["report", "--config", "config/demo.toml", "--format", "html"];
    let range = ["--from", "2026-11-19", "--to", "2026-11-21"];
    let out = finished(cli(dir, &[&args[..], &range[..]].concat()));
    let page = String::from_utf8(out.stdout).unwrap();
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert!(!page.contains("<script") && !page.contains("http://") && !page.contains("src="));
    let o2 = &demo_logs(dir)["o2"];
    assert!(page.contains("<h2>o2</h2>") && page.contains("<h2>merge1</h2>"));
    assert_eq!(page.matches("<svg").count(), 4, "a chart per connector");
    assert!(
        page.contains(&format!("<title>2026-11-20: {}</title>", o2.imported)),
        "{page}"
    );
    assert!(
        page.contains("<li class=\"open\">2026-11-21: source_not_ready"),
        "{page}"
    );
    for f in &o2.failures {
        assert!(
            page.contains(&format!("<td>{}</td>", f.item_id)),
            "{}",
            f.item_id
        );
    }
    for u in &o2.unmapped_users {
        assert!(page.contains(u.as_str()), "{u}");
    }
    std::fs::write(dir.join("days.html"), &page).unwrap();
    let bad = cli(
        dir,
        &[
            "report",
            "--config",
            "config/demo.toml",
            "--from",
            "2026-11-19",
        ],
    );
    assert_eq!(bad.status.code(), Some(2));
}

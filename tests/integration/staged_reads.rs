//! What delivery reads back from the stage: only the bytes the collection staged, and, with
//! a local cache, the local copy instead of a download.

use crate::support::*;
use async_trait::async_trait;
use chrono::NaiveDate;
use comms_archiver::pipeline::Archiver;
use comms_archiver::report::Reason;
use comms_archiver::stage::{CachedStage, Created, LocalStage, Stage, StageError, Version};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 20).unwrap()
}

/// A local stage that counts reads of staged messages and can answer one of them with
/// other bytes (a blob changed after it was staged).
struct Watched {
    inner: LocalStage,
    staged_reads: AtomicUsize,
    altered: Mutex<Option<String>>,
}

#[async_trait]
impl Stage for Watched {
    async fn put_new(&self, key: &str, bytes: &[u8]) -> Result<Created, StageError> {
        self.inner.put_new(key, bytes).await
    }
    async fn put(&self, key: &str, bytes: &[u8]) -> Result<(), StageError> {
        self.inner.put(key, bytes).await
    }
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StageError> {
        let bytes = self.inner.get(key).await?;
        if !key.starts_with("staged/") {
            return Ok(bytes);
        }
        self.staged_reads.fetch_add(1, Ordering::SeqCst);
        let mut altered = self.altered.lock().unwrap();
        // The first message read is the one changed behind the daemon's back.
        if altered.is_none() && key.ends_with(".eml") {
            *altered = Some(key.to_string());
            return Ok(bytes.map(|b| {
                let mut b = b.clone();
                b.splice(0..0, b"X-Forged: yes\r\n".iter().copied());
                b
            }));
        }
        Ok(bytes)
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
        self.inner.put_if(key, bytes, expected).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StageError> {
        self.inner.list(prefix).await
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

fn archiver(dir: &Path, stage: Arc<dyn Stage>) -> Archiver {
    comms_archiver::install_crypto_provider();
    let config = demo_config(dir);
    Archiver::from_config(&config).unwrap().with_stage(stage)
}

async fn run_o2(archiver: &Archiver) -> comms_archiver::report::StatusLog {
    let connector = archiver
        .connectors()
        .iter()
        .find(|c| c.name == "o2")
        .unwrap();
    archiver.run_day(connector, day()).await.unwrap()
}

fn watched(dir: &Path, alter: bool) -> Arc<Watched> {
    Arc::new(Watched {
        inner: LocalStage::new(dir.join("var/stage")),
        staged_reads: AtomicUsize::new(0),
        altered: Mutex::new((!alter).then(String::new)),
    })
}

#[tokio::test]
async fn a_staged_message_changed_before_delivery_is_not_imported_and_the_day_stays_open() {
    let ws = workspace();
    let dir = ws.path();
    let stage = watched(dir, true);
    let log = run_o2(&archiver(dir, stage.clone())).await;
    let altered = stage.altered.lock().unwrap().clone().unwrap();
    assert!(!log.complete, "a day with a copy not delivered stays open");
    assert!(log.adds_up());
    let failure = log
        .failures
        .iter()
        .find(|f| f.reason == Reason::StageError)
        .expect("the changed message is a failure of the stage");
    assert!(
        failure.detail.contains("changed after staging") && failure.detail.contains(&altered),
        "{}",
        failure.detail
    );
    // Nothing forged reached a mailbox.
    let forged = walk(&dir.join("var/mail"))
        .filter(|entry| std::fs::read_to_string(entry).unwrap().contains("X-Forged"))
        .count();
    assert_eq!(forged, 0);

    // The stage's own bytes are as staged: the next run imports the copy, once.
    let log = run_o2(&archiver(dir, watched(dir, false))).await;
    assert!(log.complete, "{:?}", log.failures);
    assert_eq!(counts(&dir.join("var/mail"), FOLDER), expected());
}

#[tokio::test]
async fn with_a_cache_delivery_reads_no_message_back_from_the_stage() {
    let ws = workspace();
    let dir = ws.path();
    let stage = watched(dir, false);
    let cache = dir.join("var/cache");
    let cached: Arc<dyn Stage> = Arc::new(CachedStage::new(stage.clone(), &cache, 1 << 30));
    let log = run_o2(&archiver(dir, cached)).await;
    assert!(log.complete, "{:?}", log.failures);
    assert_eq!(counts(&dir.join("var/mail"), FOLDER), expected());
    assert_eq!(stage.staged_reads.load(Ordering::SeqCst), 0);
    // Each local copy was taken once: none is left.
    assert_eq!(walk(&cache).filter(|p| p.ends_with(".eml")).count(), 0);

    // A cache too small for a message reads it from the stage.
    let ws = workspace();
    let dir = ws.path();
    let stage = watched(dir, false);
    let cached: Arc<dyn Stage> = Arc::new(CachedStage::new(stage.clone(), &cache, 100));
    let log = run_o2(&archiver(dir, cached)).await;
    assert!(log.complete, "{:?}", log.failures);
    assert_eq!(counts(&dir.join("var/mail"), FOLDER), expected());
    assert!(stage.staged_reads.load(Ordering::SeqCst) > 0);
}

/// Every file below `dir`.
fn walk(dir: &Path) -> impl Iterator<Item = String> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            match path.is_dir() {
                true => dirs.push(path),
                false => files.push(path.display().to_string()),
            }
        }
    }
    files.into_iter()
}

/// A day collected again (its copies staged by an earlier run, which a configuration or a
/// version since may render otherwise) lists each copy at the length of the message staged,
/// which is what delivery reads and takes its room in the budget for, not at the length of
/// the new rendering.
#[tokio::test]
async fn a_copy_staged_before_is_listed_at_the_length_staged() {
    let ws = workspace();
    let dir = ws.path();
    let stage_root = dir.join("var/stage");
    let archiver = archiver(dir, Arc::new(LocalStage::new(&stage_root)));
    let first = run_o2(&archiver).await;
    assert!(first.complete, "{:?}", first.failures);
    // One staged message is longer than this version renders it.
    let before = archiver
        .ledger()
        .newest_collection("o2", day())
        .await
        .unwrap()
        .unwrap();
    let staged: Vec<String> = walk(&stage_root.join("staged"))
        .filter(|p| p.ends_with(".eml"))
        .collect();
    let longer = &staged[0];
    let mut bytes = std::fs::read(longer).unwrap();
    bytes.extend(b"\r\n".repeat(50_000));
    std::fs::write(longer, &bytes).unwrap();

    let again = run_o2(&archiver).await;
    assert!(again.complete, "{:?}", again.failures);
    let ledger = archiver.ledger();
    let collected = ledger
        .newest_collection("o2", day())
        .await
        .unwrap()
        .unwrap();
    let mut listed = 0;
    for shard in 0..collected.shards {
        let copies = ledger
            .shard_copies("o2", day(), &collected.attempt, shard)
            .await
            .unwrap();
        for copy in copies.values().flatten() {
            assert!(!copy.fresh, "{}: staged by the first run", copy.staged);
            let on_disk = std::fs::metadata(stage_root.join(&copy.staged))
                .unwrap()
                .len();
            assert_eq!(copy.bytes, on_disk, "{}", copy.staged);
            listed += 1;
        }
    }
    assert_eq!(listed, staged.len(), "every copy listed");
    assert_ne!(collected.attempt, before.attempt, "collected again");
}

//! The stage in Azure Blob Storage, against a real Azurite.

use crate::azurite::{sas, Azurite};
use crate::support::*;
use comms_archiver::stage::Stage;
use serde_json::Value;
use std::path::Path;
use std::process::Output;

/// config/demo-azurite.toml aimed at this Azurite, with quick retries.
fn configure(dir: &Path, azurite: &Azurite) {
    // The walkthrough's own var/ subtree; each test has a workspace of its own.
    let text = std::fs::read_to_string(dir.join("config/demo-azurite.toml"))
        .unwrap()
        .replace("\"var/on-azurite/", "\"var/");
    let text = azurite_stage(&text, &azurite.endpoint(), 5);
    std::fs::write(dir.join("config/azurite.toml"), text).unwrap();
}

/// `once` for the demo day on the Azurite configuration, with JSON logs.
fn once_command(dir: &Path) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_comms-archiver"));
    command
        .args([
            "--log-format",
            "json",
            "once",
            "--config",
            "config/azurite.toml",
            "--date",
            "2026-11-20",
        ])
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env("COMMS_ARCHIVER_AZURITE_SAS", sas());
    command
}

fn once(dir: &Path, extra_env: &[(&str, &str)]) -> Output {
    let mut command = once_command(dir);
    for (k, v) in extra_env {
        command.env(k, v);
    }
    command.output().unwrap()
}

pub fn stage(azurite: &Azurite) -> comms_archiver::stage::AzureStage {
    container(azurite, "comms-archiver")
}

fn container(azurite: &Azurite, name: &str) -> comms_archiver::stage::AzureStage {
    azurite.stage(name, std::time::Duration::from_secs(5))
}

const COPIES: usize = 16 + 11 + 6 + 4;

/// `check --verify-stage` for the O2 connector's demo day.
async fn verify(dir: &Path, date: &'static str) -> Output {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_comms-archiver"))
            .args([
                "check",
                "--config",
                "config/azurite.toml",
                "--verify-stage",
                "--date",
                date,
                "--connector",
                "o2",
            ])
            .current_dir(&dir)
            .env("COMMS_ARCHIVER_AZURITE_SAS", sas())
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_day_lives_in_the_container_and_a_rerun_adds_nothing() {
    let ws = workspace();
    let dir = ws.path().to_path_buf();
    let azurite = Azurite::start(&dir.join("azurite"));
    configure(&dir, &azurite);
    let d = dir.clone();
    let out = succeeds(move || once(&d, &[])).await;
    assert_eq!(imported_events(&out.stderr), COPIES);
    assert!(!dir.join("var/stage").exists(), "nothing is staged locally");

    let stage = stage(&azurite);
    // Azurite runs on this host's clock: its answers' dates agree with it.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("this host's clock"), "{stderr}");
    let probed = stage.probe().await.unwrap();
    assert!(
        probed.ends_with("takes writes; this host's clock agrees with the stage's"),
        "{probed}"
    );
    let staged = stage.list("staged/").await.unwrap();
    assert_eq!(staged.len(), COPIES, "one blob per imported copy");
    // One import record per copy, written in a few journal batches.
    let batches: Vec<String> = stage
        .list("ledger/")
        .await
        .unwrap()
        .into_iter()
        .filter(|k| k.contains("/journal/"))
        .collect();
    assert!(batches.len() < COPIES / 4, "{batches:?}");
    let mut records = 0;
    for batch in &batches {
        let text = stage.get(batch).await.unwrap().unwrap();
        records += text
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .count();
    }
    assert_eq!(records, COPIES);
    let mut reports = stage.list("reports/").await.unwrap();
    reports.sort();
    assert_eq!(
        reports.len(),
        8,
        "JSON and CSV for four connectors: {reports:?}"
    );
    assert!(stage.get("checkpoints/o2.json").await.unwrap().is_some());
    assert_eq!(counts(&dir.join("var/mail"), FOLDER), expected());

    let d = dir.clone();
    let again = tokio::task::spawn_blocking(move || once(&d, &[]))
        .await
        .unwrap();
    assert_eq!(again.status.code(), Some(3));
    assert_eq!(imported_events(&again.stderr), 0);
    assert_eq!(
        stage.list("staged/").await.unwrap().len(),
        COPIES,
        "nothing staged twice"
    );

    // The staged messages still match the SHA-256 recorded at import. They are kept under
    // their items' dates: the day's delivery carries one late message of the 19th.
    for (date, count) in [("2026-11-20", 15), ("2026-11-19", 1)] {
        let verify = verify(&dir, date).await;
        let text = String::from_utf8_lossy(&verify.stdout);
        assert_eq!(verify.status.code(), Some(0), "{text}");
        let line =
            format!("o2 {date}: staged and matching the ledger {count}, changed or missing 0");
        assert!(text.contains(&line), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_staged_message_is_reported() {
    let ws = workspace();
    let dir = ws.path().to_path_buf();
    let azurite = Azurite::start(&dir.join("azurite"));
    configure(&dir, &azurite);
    let d = dir.clone();
    assert_eq!(
        tokio::task::spawn_blocking(move || once(&d, &[]))
            .await
            .unwrap()
            .status
            .code(),
        Some(3)
    );
    let stage = stage(&azurite);
    let victim = stage
        .list("staged/o2/2026-11-20/")
        .await
        .unwrap()
        .into_iter()
        .next()
        .unwrap();
    stage
        .put(&victim, b"Subject: altered\r\n\r\nnot the original\r\n")
        .await
        .unwrap();
    let verify = verify(&dir, "2026-11-20").await;
    let text = String::from_utf8_lossy(&verify.stdout);
    assert_eq!(verify.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!("MISMATCH {victim}: SHA-256 ")),
        "{text}"
    );
}

/// Runs `once` while watching its log: `on_import(n)` is called after the n-th import.
fn once_watched(dir: &Path, mut on_import: impl FnMut(usize)) -> (Option<i32>, usize, String) {
    use std::io::BufRead;
    let mut child = once_command(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut imported = 0;
    let mut log = String::new();
    for line in std::io::BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Ok(event) = serde_json::from_str::<Value>(&line) {
            if event["target"] == "comms_archiver::item" && event["outcome"] == "imported" {
                imported += 1;
                on_import(imported);
            }
        }
        log.push_str(&line);
        log.push('\n');
    }
    (child.wait().unwrap().code(), imported, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azurite_killed_mid_run_loses_nothing_and_a_rerun_completes_once() {
    let ws = workspace();
    let dir = ws.path().to_path_buf();
    let azurite = std::sync::Arc::new(std::sync::Mutex::new(Azurite::start(&dir.join("azurite"))));
    configure(&dir, &azurite.lock().unwrap());
    let (d, a) = (dir.clone(), azurite.clone());
    let (code, first, first_log) = tokio::task::spawn_blocking(move || {
        once_watched(&d, |n| {
            if n == 10 {
                a.lock().unwrap().kill();
            }
        })
    })
    .await
    .unwrap();
    assert_eq!(code, Some(1), "work remains: {first_log}");
    assert!(
        (10..COPIES).contains(&first),
        "{first} imported before the stage went away"
    );
    assert!(
        first_log.contains("Azure storage devstoreaccount1 container comms-archiver"),
        "errors name the account and container"
    );

    azurite.lock().unwrap().restart();
    let d = dir.clone();
    let (code, second, log) = tokio::task::spawn_blocking(move || once_watched(&d, |_| {}))
        .await
        .unwrap();
    assert_eq!(code, Some(3), "{log}");
    // Copies that reached the mailbox while the ledger could not record them are found there
    // by the rerun (skipped), never imported again.
    let copies = |text: &str, outcome: &str| -> std::collections::BTreeSet<(String, String)> {
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["target"] == "comms_archiver::item" && e["outcome"] == outcome)
            .map(|e| {
                (
                    e["item_key"].as_str().unwrap().to_string(),
                    e["mailbox"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let (imported_first, imported_second) =
        (copies(&first_log, "imported"), copies(&log, "imported"));
    assert_eq!(imported_first.len(), first);
    assert_eq!(imported_second.len(), second);
    assert!(
        imported_first.is_disjoint(&imported_second),
        "a copy was imported twice"
    );
    // The rerun delivers the shards the first run had not finished (the others it leaves
    // as they were recorded): between them, every copy, once.
    let mut present: std::collections::BTreeSet<_> = imported_second.clone();
    present.extend(copies(&log, "skipped_duplicate"));
    present.extend(imported_first.iter().cloned());
    assert_eq!(present.len(), COPIES, "the two runs account for every copy");
    assert_eq!(counts(&dir.join("var/mail"), FOLDER), expected());
    let stage = stage(&azurite.lock().unwrap());
    assert_eq!(stage.list("staged/").await.unwrap().len(), COPIES);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_on_one_container_import_every_item_once() {
    let ws = workspace();
    let dir = ws.path().to_path_buf();
    let azurite = Azurite::start(&dir.join("azurite"));
    configure(&dir, &azurite);
    // Create the container first, so both start on equal terms.
    stage(&azurite).prepare().await.unwrap();
    let (a, b) = (dir.clone(), dir.clone());
    let first = tokio::task::spawn_blocking(move || once(&a, &[]));
    let second = tokio::task::spawn_blocking(move || once(&b, &[]));
    let (first, second) = (first.await.unwrap(), second.await.unwrap());
    let mut imported = imported_events(&first.stderr) + imported_events(&second.stderr);
    // A daemon that found a day busy left it open; a last run finishes whatever is left.
    if first.status.code() != Some(3) || second.status.code() != Some(3) {
        let d = dir.clone();
        let last = succeeds(move || once(&d, &[])).await;
        imported += imported_events(&last.stderr);
    }
    assert_eq!(imported, COPIES, "each copy imported by exactly one daemon");
    assert_eq!(counts(&dir.join("var/mail"), FOLDER), expected());
    assert_eq!(stage(&azurite).list("staged/").await.unwrap().len(), COPIES);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sas_never_appears_in_logs_at_any_level() {
    let ws = workspace();
    let dir = ws.path().to_path_buf();
    let mut azurite = Azurite::start(&dir.join("azurite"));
    configure(&dir, &azurite);
    let token = sas();
    let signature = token.split("sig=").nth(1).unwrap().to_string();
    let decoded: String = url::form_urlencoded::parse(format!("s={signature}").as_bytes())
        .next()
        .unwrap()
        .1
        .into_owned();
    let run = |dir: std::path::PathBuf| {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_comms-archiver"))
                .args([
                    "once",
                    "--config",
                    "config/azurite.toml",
                    "--date",
                    "2026-11-20",
                    "--connector",
                    "o2",
                ])
                .current_dir(&dir)
                .env("RUST_LOG", "trace")
                .env("COMMS_ARCHIVER_AZURITE_SAS", sas())
                .output()
                .unwrap()
        })
    };
    let ok = run(dir.clone()).await.unwrap();
    assert_eq!(ok.status.code(), Some(3));
    azurite.kill();
    let down = run(dir.clone()).await.unwrap();
    assert_eq!(down.status.code(), Some(1));
    for out in [&ok, &down] {
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains("TRACE") || text.contains("DEBUG"),
            "trace level was on"
        );
        assert!(
            !text.contains(&signature) && !text.contains(&decoded),
            "the SAS signature was logged"
        );
    }
}

/// With `state_container`, evidence and state are two containers: the one an immutability
/// policy would cover holds only what is written once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_apart_leaves_the_evidence_container_write_once() {
    let ws = workspace();
    let dir = ws.path().to_path_buf();
    let azurite = Azurite::start(&dir.join("azurite"));
    configure(&dir, &azurite);
    let path = dir.join("config/azurite.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let text = patched(
        &text,
        &[(
            "container = \"comms-archiver\"",
            "container = \"comms-archiver\"\nstate_container = \"comms-archiver-state\"",
        )],
    );
    std::fs::write(&path, text).unwrap();
    let d = dir.clone();
    succeeds(move || once(&d, &[])).await;
    let d = dir.clone();
    succeeds(move || once(&d, &[])).await;

    let evidence = stage(&azurite);
    evidence.prepare().await.unwrap();
    let state = container(&azurite, "comms-archiver-state");
    let mut written = evidence.list("staged/").await.unwrap();
    written.extend(evidence.list("ledger/").await.unwrap());
    written.extend(evidence.list("runs/").await.unwrap());
    written.extend(evidence.list("checkpoints/").await.unwrap());
    written.extend(evidence.list("reports/").await.unwrap());
    assert!(written.len() > COPIES, "{written:?}");
    assert!(
        written
            .iter()
            .all(|k| comms_archiver::stage::is_evidence(k)),
        "{written:?}"
    );
    assert_eq!(evidence.list("runs/o2/").await.unwrap().len(), 2);
    assert!(state.get("checkpoints/o2.json").await.unwrap().is_some());
    assert!(state
        .list("ledger/o2/days/")
        .await
        .unwrap()
        .iter()
        .all(|k| !comms_archiver::stage::is_evidence(k)));
    assert_eq!(state.list("staged/").await.unwrap().len(), 0);
    assert_eq!(counts(&dir.join("var/mail"), FOLDER), expected());
}

/// With `cache_path`, the daemon delivers the messages it staged from its local copies (each
/// taken once, so none is left), and the container holds every one of them all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_cache_serves_delivery_and_the_container_keeps_everything() {
    let ws = workspace();
    let dir = ws.path().to_path_buf();
    let azurite = Azurite::start(&dir.join("azurite"));
    configure(&dir, &azurite);
    let path = dir.join("config/azurite.toml");
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "kind = \"azure\"",
        "kind = \"azure\"\ncache_path = \"var/cache\"\ncache_max_bytes = 67108864",
    );
    std::fs::write(&path, text).unwrap();
    let d = dir.clone();
    let out = succeeds(move || once(&d, &[])).await;
    assert_eq!(imported_events(&out.stderr), COPIES);
    assert_eq!(counts(&dir.join("var/mail"), FOLDER), expected());
    let left: Vec<_> = walkdir(&dir.join("var/cache"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .collect();
    assert!(dir.join("var/cache").is_dir(), "the cache was used");
    assert!(left.is_empty(), "every local copy was delivered: {left:?}");
    let staged = stage(&azurite).list("staged/").await.unwrap();
    assert_eq!(staged.len(), COPIES, "the container is the record");
}

/// A blob is created once whatever its size, in one request (up to 64 MiB) or in blocks
/// (beyond): creating its key again keeps the first bytes and says so, and its size is the
/// first bytes' length (a key never written has none).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_of_any_size_is_created_once() {
    use comms_archiver::stage::Created;
    let ws = workspace();
    let azurite = Azurite::start(&ws.path().join("azurite"));
    let stage = azurite.stage("sizes", std::time::Duration::from_secs(120));
    stage.ensure_container().await.unwrap();
    for (n, size) in [0, 5 * 1024 * 1024, 64 * 1024 * 1024 + 1]
        .into_iter()
        .enumerate()
    {
        let key = format!("held/o2/2026-11-25/{n}.json");
        let first: Vec<u8> = (0..size).map(|i| (i * 31 + n) as u8).collect();
        let made = stage.put_new(&key, &first).await.unwrap();
        assert_eq!(made, Created::New, "{size} bytes");
        let again = stage.put_new(&key, &vec![b'x'; size.max(1)]).await.unwrap();
        assert_eq!(again, Created::AlreadyExists, "{size} bytes");
        let kept = stage.get(&key).await.unwrap().expect("there");
        assert!(kept == first, "{size} bytes: the first bytes are kept");
        assert_eq!(stage.size(&key).await.unwrap(), Some(size as u64));
    }
    assert_eq!(
        stage.size("held/o2/2026-11-25/none.json").await.unwrap(),
        None
    );
}

fn walkdir(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        match path.is_dir() {
            true => files.extend(walkdir(&path)),
            false => files.push(path),
        }
    }
    files
}

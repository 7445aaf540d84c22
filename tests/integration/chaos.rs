//! Chaos: the daemon killed with SIGKILL at random points of a generated day, again and
//! again, with the partner simulator over HTTP, the stage in a real Azurite and the mailboxes in
//! a real Dovecot. At the end every mailbox holds exactly the expected set: nothing lost,
//! nothing twice, nothing misfiled. The seed is fixed (CHAOS_SEED overrides it) and printed.
//!
//! The day is the realistic generated mix (`comms_archiver_testkit::workload`): in CI 400 items for 50
//! mailboxes and 20 kills spread over it; `CHAOS_SIZE=S` makes it the benchmark's S day (10,000
//! items for 1,000 mailboxes); CHAOS_KILLS, CHAOS_ITEMS and CHAOS_MAILBOXES set each part.

use crate::azurite::{sas, Azurite};
use crate::dovecot::{Dovecot, PASSWORD};
use crate::support::*;
use comms_archiver_testkit::simulator::{Simulator, SimulatorConfig};
use comms_archiver_testkit::workload::Workload;
use serde_json::Value;
use std::collections::HashSet;
use std::io::Write;
use std::path::Path;

/// Runs `once` for the generated day; kills it after `kill_after` imports (if it gets there).
/// Returns whether it finished by itself, and its exit code.
fn once_until(dir: &Path, kill_after: Option<usize>) -> (bool, Option<i32>) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_comms-archiver"))
        .args([
            "--log-format",
            "json",
            "once",
            "--config",
            "config/chaos.toml",
            "--date",
            "2026-11-25",
        ])
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env("COMMS_ARCHIVER_SIM_SECRET", "simulator")
        .env("COMMS_ARCHIVER_IMAP_PASSWORD", PASSWORD)
        .env("COMMS_ARCHIVER_AZURITE_SAS", sas())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (imported, ended) = kill_after_imports(&mut child, kill_after.unwrap_or(usize::MAX));
    match Some(imported) == kill_after {
        true => (false, None),
        false => (true, ended.code()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_loses_nothing_and_duplicates_nothing() {
    comms_archiver::install_crypto_provider();
    let var = |name: &str| std::env::var(name).ok().and_then(|s| s.parse::<u64>().ok());
    let s_size = std::env::var("CHAOS_SIZE").is_ok_and(|s| s == "S");
    let seed = var("CHAOS_SEED").unwrap_or(20261121);
    let kills = var("CHAOS_KILLS").unwrap_or(20) as usize;
    let items = var("CHAOS_ITEMS").unwrap_or(if s_size { 10_000 } else { 400 }) as usize;
    let mailboxes = var("CHAOS_MAILBOXES").unwrap_or(if s_size { 1_000 } else { 50 }) as usize;
    // Straight to stderr, past the test harness's capture: CI's log shows the seed even when
    // the test passes.
    let _ = writeln!(
        std::io::stderr(),
        "chaos: CHAOS_SEED={seed} CHAOS_KILLS={kills} CHAOS_ITEMS={items} CHAOS_MAILBOXES={mailboxes}"
    );
    let workload = Workload {
        items,
        mailboxes,
        seed,
    };

    let ws = workspace();
    let dir = ws.path().to_path_buf();
    let mut config = SimulatorConfig::new(dir.join("fixtures"));
    config.workload = Some(workload);
    let sim = Simulator::new(config);
    let (addr, server) = sim.start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let azurite = Azurite::start(&dir.join("azurite"));
    let d = dir.clone();
    let dovecot = tokio::task::spawn_blocking(move || Dovecot::start(&d, None))
        .await
        .unwrap();

    // The HTTPS demo, with the stage in Azurite and the mailboxes in Dovecot.
    let https = std::fs::read_to_string(dir.join("config/demo-https.toml")).unwrap();
    let https = patched(&https, &[("18080", &addr.port().to_string())]);
    let stage = std::fs::read_to_string(dir.join("config/demo-azurite.toml")).unwrap();
    let stage = &stage[stage.find("[stage]").unwrap()..stage.find("[mailbox]").unwrap()];
    let mailbox = std::fs::read_to_string(dir.join("config/demo-imap.toml")).unwrap();
    let mailbox =
        &mailbox[mailbox.find("[mailbox]").unwrap()..mailbox.find("[connectors.o2]").unwrap()];
    let head = &https[..https.find("[stage]").unwrap()];
    let connectors = &https[https.find("[connectors.o2]").unwrap()..];
    let text = format!(
        "{head}{}{}{connectors}",
        azurite_stage(stage, &azurite.endpoint(), 10),
        patched(
            mailbox,
            &[("port = 10143", &format!("port = {}", dovecot.port))]
        )
    );
    std::fs::write(dir.join("config/chaos.toml"), text).unwrap();

    // Kill points, drawn from the seed and spread over the day (with the 6-hour overlap the
    // day is about 1.25 times `items` copies).
    let mut state = seed | 1;
    let mut draw = |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        1 + (state % n as u64) as usize
    };
    let mut finished = false;
    for round in 0..kills {
        let kill_after = draw((items * 5 / 2 / kills).max(1));
        let d = dir.clone();
        let (done, code) = tokio::task::spawn_blocking(move || once_until(&d, Some(kill_after)))
            .await
            .unwrap();
        eprintln!(
            "chaos: round {round} kill after {kill_after} imports: finished={done} exit={code:?}"
        );
        if done {
            assert_eq!(code, Some(3));
            finished = true;
        }
    }
    if !finished {
        let d = dir.clone();
        let (done, code) = tokio::task::spawn_blocking(move || once_until(&d, None))
            .await
            .unwrap();
        assert!(
            done && code == Some(3),
            "the last run completes the day (exit {code:?})"
        );
    }

    // What the final status logs say the day holds, and what Dovecot holds.
    let stage_client = azurite.stage("comms-archiver", std::time::Duration::from_secs(10));
    let mut expected = 0u64;
    for connector in ["merge1", "o2", "sl2", "whatsapp"] {
        use comms_archiver::stage::Stage;
        let raw = stage_client
            .get(&format!("reports/{connector}/2026-11-25.json"))
            .await
            .unwrap()
            .unwrap();
        let log: Value = serde_json::from_slice(&raw).unwrap();
        assert_eq!(log["complete"], true, "{log}");
        // Only what the day is made to fail: items over 10 MiB and unmapped numbers, held
        // for a later delivery.
        assert!(log["failures"].as_array().unwrap().is_empty(), "{log}");
        let held = log["held_copies"].as_array().cloned().unwrap_or_default();
        for failure in &held {
            let reason = failure["reason"].as_str().unwrap();
            assert!(
                reason == "size_exceeded" || reason == "user_mapping",
                "{failure}"
            );
        }
        let held = log["held"].as_u64().unwrap();
        expected += log["available_for_import"].as_u64().unwrap() - held;
    }
    let read = tokio::task::spawn_blocking(move || {
        let users: Vec<String> = (0..mailboxes)
            .map(|k| format!("user{k}@contoso.com"))
            .collect();
        let names: Vec<&str> = users.iter().map(String::as_str).collect();
        dovecot.read_back(&names)
    })
    .await
    .unwrap();
    let mut seen = HashSet::new();
    for (mailbox, folders) in read.as_object().unwrap() {
        let k: usize = mailbox
            .trim_start_matches("user")
            .split('@')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        for (_folder, messages) in folders.as_object().unwrap() {
            for m in messages.as_array().unwrap() {
                let item = m["item_id"].as_str().unwrap_or_default().to_string();
                assert!(
                    seen.insert((mailbox.clone(), item.clone())),
                    "{item} twice in {mailbox}"
                );
                // Generated item MIX-<day>-<n> belongs to the employee the workload planned.
                let id = item.trim_end_matches("@merge1.example");
                let (day, n) = id
                    .strip_prefix("MIX-")
                    .and_then(|rest| rest.rsplit_once('-'))
                    .unwrap_or_else(|| panic!("{item}: not a generated item"));
                let planned = workload.plan(day.parse().unwrap(), n.parse().unwrap());
                assert_eq!(planned.employee, Some(k), "{item} misfiled in {mailbox}");
            }
        }
    }
    assert_eq!(
        seen.len() as u64,
        expected,
        "nothing lost: every copy of the day is in its mailbox"
    );
    server.abort();
}

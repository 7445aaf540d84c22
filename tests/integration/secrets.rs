//! No secret, at any log level, in any log, error or status log, whatever fails.

use crate::partners::{Partners, SECRET};
use crate::support::*;
use std::path::Path;
use std::sync::atomic::Ordering;

/// Every file under `dir`, as text.
fn all_text(dir: &Path) -> String {
    let mut out = String::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.push_str(&all_text(&path));
        } else {
            out.push_str(&String::from_utf8_lossy(&std::fs::read(&path).unwrap()));
        }
    }
    out
}

/// config/sim.toml: the HTTPS demo as a user writes it (the secret from the environment),
/// aimed at the simulator on `port`, with quick retries.
fn write_sim_config(dir: &Path, port: u16, max_retries: u32) {
    let text = std::fs::read_to_string(dir.join("config/demo-https.toml"))
        .unwrap()
        .replace("\"var/https/", "\"var/")
        .replace("18080", &port.to_string())
        .replace(
            "allow_http_loopback = true",
            &format!(
                "allow_http_loopback = true\nretry_initial_ms = 5\nmax_retries = {max_retries}"
            ),
        );
    std::fs::write(dir.join("config/sim.toml"), text).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_logs_errors_or_status_logs_at_any_level() {
    let ws = workspace();
    let dir = ws.path().to_path_buf();
    let partners = Partners::start(&dir, |_| {}).await;
    write_sim_config(&dir, partners.port, 2);
    let run = |args: &'static [&'static str]| {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_comms-archiver"))
                .args(args)
                .current_dir(&dir)
                .env("RUST_LOG", "trace")
                .env("COMMS_ARCHIVER_SIM_SECRET", SECRET)
                .output()
                .unwrap()
        })
    };
    let once: &[&str] = &[
        "--log-format",
        "json",
        "once",
        "--config",
        "config/sim.toml",
        "--date",
        "2026-11-20",
    ];
    let mut logs = String::new();

    let ok = run(once).await.unwrap();
    assert_eq!(
        ok.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    logs.push_str(&String::from_utf8_lossy(&ok.stderr));

    // The partner stays down: exit 1, and the status log says why.
    partners.sim.faults().down.store(true, Ordering::SeqCst);
    let down = run(&[
        "--log-format",
        "json",
        "once",
        "--config",
        "config/sim.toml",
        "--date",
        "2026-11-21",
    ])
    .await
    .unwrap();
    assert_eq!(down.status.code(), Some(1));
    logs.push_str(&String::from_utf8_lossy(&down.stderr));
    let report = run(&[
        "report",
        "--config",
        "config/sim.toml",
        "--date",
        "2026-11-21",
        "--connector",
        "o2",
        "--format",
        "json",
    ])
    .await
    .unwrap();
    let log: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    assert_eq!(log["errors"][0]["reason"], "source_unavailable");
    partners.sim.faults().down.store(false, Ordering::SeqCst);

    // A rejected secret: the error names the connector, never the value.
    let check = run(&["check", "--config", "config/sim.toml"])
        .await
        .unwrap();
    logs.push_str(&String::from_utf8_lossy(&check.stdout));
    std::fs::write(
        dir.join("config/wrong.toml"),
        std::fs::read_to_string(dir.join("config/sim.toml"))
            .unwrap()
            .replace("username = \"archiver\"", "username = \"intruder\""),
    )
    .unwrap();
    let denied = run(&[
        "--log-format",
        "json",
        "once",
        "--config",
        "config/wrong.toml",
        "--date",
        "2026-11-20",
        "--connector",
        "o2",
    ])
    .await
    .unwrap();
    assert_eq!(denied.status.code(), Some(1));
    logs.push_str(&String::from_utf8_lossy(&denied.stderr));
    assert!(
        logs.contains("refused the credentials (401)"),
        "the rejection is logged"
    );
    assert!(
        logs.contains("\"level\":\"TRACE\"") || logs.contains("\"level\":\"DEBUG\""),
        "trace level was on"
    );

    assert!(!logs.contains(SECRET), "a log line holds the secret");
    assert!(
        !all_text(&dir.join("var/stage")).contains(SECRET),
        "the stage holds the secret"
    );
}

/// `check --connect` signs in to every partner over HTTPS and reads a record: OK with the
/// right secret, all together and one by one; with a wrong one, a FAIL that says the
/// partner refused, never the secret (exit 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_connect_signs_in_to_every_partner() {
    let ws = workspace();
    let dir = ws.path().to_path_buf();
    let partners = Partners::start(&dir, |_| {}).await;
    write_sim_config(&dir, partners.port, 1);
    let check = |secret: &'static str, connector: &'static str| {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || {
            let args = ["check", "--connect", "--config", "config/sim.toml"];
            std::process::Command::new(env!("CARGO_BIN_EXE_comms-archiver"))
                .args(args)
                .args(match connector {
                    "" => vec![],
                    c => vec!["--connector", c],
                })
                .current_dir(&dir)
                .env_remove("RUST_LOG")
                .env("COMMS_ARCHIVER_SIM_SECRET", secret)
                .output()
                .unwrap()
        })
    };
    let all = check(SECRET, "").await.unwrap();
    let said = String::from_utf8_lossy(&all.stdout).to_string();
    assert_eq!(all.status.code(), Some(0), "{said}");
    assert_eq!(said.matches(": signed in").count(), 4, "{said}");
    for connector in ["merge1", "o2", "sl2", "whatsapp"] {
        let ok = check(SECRET, connector).await.unwrap();
        let said = String::from_utf8_lossy(&ok.stdout).to_string();
        assert_eq!(ok.status.code(), Some(0), "{connector}: {said}");
        assert!(said.contains(": signed in"), "{connector}: {said}");

        let wrong = check("not-the-secret", connector).await.unwrap();
        let said = String::from_utf8_lossy(&wrong.stdout).to_string();
        assert_eq!(wrong.status.code(), Some(2), "{connector}: {said}");
        assert!(said.contains("FAIL  source:"), "{connector}: {said}");
        assert!(!said.contains("not-the-secret"), "{said}");
        assert!(!said.contains(SECRET), "{said}");
    }
    drop(partners);
}

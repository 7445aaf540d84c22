//! The daemon as a service runs it: `run` serves health and metrics and stops on SIGTERM.

use crate::cli::{deliver_demo_as, n, once, report_json};
use crate::support::*;

/// A daemon started by a test, killed by pid when the test ends however it ends.
struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET over plain HTTP/1.1; returns status and body.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, response.split_once("\r\n\r\n")?.1.to_string()))
}

fn wait_until(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn run_daemon_serves_health_and_metrics_and_stops_on_sigterm() {
    let ws = workspace();
    let dir = ws.path();
    let yesterday = chrono::Utc::now().date_naive().pred_opt().unwrap();
    deliver_demo_as(dir, yesterday);
    let port = free_port();
    let mut child = Daemon(
        std::process::Command::new(env!("CARGO_BIN_EXE_comms-archiver"))
            .args(["run", "--config", "config/demo.toml"])
            .current_dir(dir)
            .env_remove("RUST_LOG")
            .env(
                "COMMS_ARCHIVER__TELEMETRY__LISTEN",
                format!("127.0.0.1:{port}"),
            )
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until("/healthz", 60, || {
        http_get(port, "/healthz") == Some((200, "ok\n".to_string()))
    });
    let metrics = || {
        http_get(port, "/metrics")
            .map(|(_, body)| body)
            .unwrap_or_default()
    };
    // The day's items count as they go; the day itself once its session has finished it
    // (run log, checkpoint, reconciliation), a moment later.
    wait_until("the day's metrics", 60, || {
        let body = metrics();
        body.contains(
            r#"comms_archiver_items_total{connector="o2",outcome="imported",reason=""} 16"#,
        ) && body.contains(r#"comms_archiver_days_total{connector="o2",state="complete"}"#)
    });
    let body = metrics();
    assert!(
        body.contains(r#"outcome="held",reason="size_exceeded"} 1"#),
        "{body}"
    );
    assert!(
        body.contains("comms_archiver_bytes_imported_total"),
        "{body}"
    );
    assert!(
        body.contains("comms_archiver_last_complete_day_timestamp_seconds"),
        "{body}"
    );
    let (status, ready) = http_get(port, "/readyz").unwrap();
    assert_eq!(status, 200, "{ready}");
    // The page of the last 30 days, on loopback without a token, once O2's day is done
    // (the connectors run side by side).
    let mut page = String::new();
    wait_until("/status shows O2's day", 30, || {
        let (status, body) = http_get(port, "/status").unwrap_or_default();
        page = body;
        status == 200 && page.contains("O2-20261120-0010")
    });
    assert!(
        page.starts_with("<!DOCTYPE html>") && page.contains("<h2>o2</h2>"),
        "{page}"
    );
    assert!(
        page.contains("<svg") && page.contains("user_mapping"),
        "{page}"
    );

    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let mut status = None;
    wait_until("exit after SIGTERM", 35, || {
        status = child.0.try_wait().unwrap();
        status.is_some()
    });
    assert_eq!(status.unwrap().code(), Some(0));

    // A later run finds everything in place: nothing lost, nothing twice.
    let by_daemon = report_json(dir, &yesterday.to_string());
    assert_eq!(once(dir, &yesterday.to_string()), Some(3));
    // The day reads the same after `once` ran it again; that run's own log has it all as
    // duplicates.
    let log = report_json(dir, &yesterday.to_string());
    assert_eq!(n(&log, "imported"), n(&by_daemon, "imported"));
    let again = run_logs(dir, "o2", &yesterday.to_string()).pop().unwrap();
    assert_eq!(n(&again, "imported"), 0);
    assert_eq!(n(&again, "skipped_duplicates"), 17);
    assert_eq!(counts(&dir.join("var/mail"), FOLDER), expected());
}

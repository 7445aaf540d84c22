//! Which day a message is read in: a finished day's message goes to the next open one, a day
//! before the daemon's window is run by the daemon.

use super::*;
use crate::support::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn a_message_for_a_finished_day_is_filed_in_the_next_open_day() {
    let ws = workspace();
    let dir = ws.path();
    let port = free_port();
    smtp_config(dir, port, &[]);
    // The day is run and finished with nothing in the intake.
    let out = once(dir);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(o2_log(dir).complete);
    let running = daemon(dir, port);
    std::fs::write(
        dir.join("late.eml"),
        message("TM-LATE", "arrived after its day"),
    )
    .unwrap();
    let sent = python(&[
        "send",
        &port.to_string(),
        RCPT,
        dir.join("late.eml").to_str().unwrap(),
    ]);
    assert_eq!(sent[0]["code"], 250, "{sent:?}");
    stop(running);
    assert!(
        !dir.join("var/stage/intake/o2/2026-11-20/messages").exists(),
        "not filed where no run reads again"
    );
    let out = cli(
        dir,
        &[
            "once",
            "--config",
            "config/smtp.toml",
            "--date",
            "2026-11-21",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log: comms_archiver::report::StatusLog = serde_json::from_slice(
        &std::fs::read(dir.join("var/stage/reports/o2/2026-11-21.json")).unwrap(),
    )
    .unwrap();
    assert_eq!((log.available_from_source, log.imported), (1, 1));
    let alice = messages(&dir.join("var/mail"), "alice.smith@contoso.com", FOLDER);
    assert_eq!(alice.len(), 1);
    let raw = std::fs::read(&alice[0]).unwrap();
    assert_eq!(
        header(&raw, "Date").as_deref(),
        Some("Fri, 20 Nov 2026 10:00:00 +0000"),
        "its own time"
    );
    let record = std::fs::read_dir(dir.join("var/stage/intake/o2/2026-11-21/accepted"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(record).unwrap()).unwrap();
    assert_eq!(record["accepted"][0]["late_for"], "2026-11-20");
}

#[test]
fn a_message_for_a_day_before_the_daemons_window_is_run_by_the_daemon_itself() {
    let ws = workspace();
    let dir = ws.path();
    let port = free_port();
    smtp_config(dir, port, &[]);
    let running = daemon(dir, port);
    // The 20th is weeks before the daemon's window (it has never completed a day): no wake
    // would reach it, so the intake notes it for the next one.
    std::fs::write(
        dir.join("old.eml"),
        message("TM-OLD", "for a day long past"),
    )
    .unwrap();
    let sent = python(&[
        "send",
        &port.to_string(),
        RCPT,
        dir.join("old.eml").to_str().unwrap(),
    ]);
    assert_eq!(sent[0]["code"], 250, "{sent:?}");
    stop(running);
    assert!(dir
        .join("var/stage/ledger/o2/intake-behind/2026-11-20.json")
        .exists());
    // The daemon's next start (a wake) runs the 20th; no one has to run `once`.
    let log = dir.join("second-run.log");
    let mut second = Command::new(env!("CARGO_BIN_EXE_comms-archiver"))
        .args([
            "--log-format",
            "json",
            "run",
            "--config",
            "config/smtp.toml",
        ])
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !dir.join("var/stage/reports/o2/2026-11-20.json").exists() {
        assert!(
            Instant::now() < deadline,
            "{}",
            std::fs::read_to_string(&log).unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    let _ = Command::new("kill")
        .args(["-TERM", &second.id().to_string()])
        .status();
    second.wait().unwrap();
    let day = o2_log(dir);
    assert_eq!((day.available_from_source, day.imported), (1, 1));
    assert!(day.complete);
    assert_eq!(
        messages(&dir.join("var/mail"), "alice.smith@contoso.com", FOLDER).len(),
        1
    );
}

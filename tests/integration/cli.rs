//! The binary, run as a user runs it, on copies of config/ and fixtures/.

use crate::support::*;
use mail_parser::MimeHeaders;
use serde_json::Value;
use std::path::Path;

/// `once` on the demo configuration for a day; returns the exit code.
pub(crate) fn once(dir: &Path, date: &str) -> Option<i32> {
    let out = cli(
        dir,
        &["once", "--config", "config/demo.toml", "--date", date],
    );
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    out.status.code()
}

/// `report --format json` of the O2 connector on the demo configuration for a day.
pub(crate) fn report_json(dir: &Path, date: &str) -> Value {
    let args = [
        "report",
        "--config",
        "config/demo.toml",
        "--date",
        date,
        "--connector",
        "o2",
        "--format",
        "json",
    ];
    let out = cli(dir, &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

pub(crate) fn n(log: &Value, key: &str) -> u64 {
    log[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing in {log}"))
}

fn assert_adds_up(log: &Value) {
    assert_eq!(
        n(log, "available_for_import"),
        n(log, "imported")
            + n(log, "partially_imported")
            + n(log, "skipped_duplicates")
            + n(log, "failed")
            + n(log, "held"),
        "{log}"
    );
    assert_eq!(
        n(log, "failed") as usize,
        log["failures"].as_array().unwrap().len()
    );
}

#[test]
fn demo_day_imports_every_item_once_and_reports_it() {
    let ws = workspace();
    let dir = ws.path();
    assert_eq!(once(dir, "2026-11-20"), Some(3));

    let mail = dir.join("var/mail");
    assert_eq!(counts(&mail, FOLDER), expected());
    // One folder per connector under the Inbox, named exactly as Microsoft's connectors do.
    let mut names: Vec<String> = std::fs::read_dir(mail.join("alice.smith@contoso.com"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            ".INBOX.CellTrust",
            ".INBOX.CellTrust SL2",
            ".INBOX.O2 SMS and Voice Network Archiver",
            ".INBOX.WhatsApp Archiver"
        ]
    );

    let log = report_json(dir, "2026-11-20");
    assert_eq!(log["connector"], "o2");
    assert_eq!(log["day"], "2026-11-20");
    assert_eq!(log["complete"], true);
    assert_eq!(n(&log, "available_from_source"), 18);
    assert_eq!(n(&log, "available_for_import"), 19);
    assert_eq!(n(&log, "imported"), 16);
    assert_eq!(
        n(&log, "skipped_duplicates"),
        1,
        "the partner repeated one item"
    );
    assert_eq!(n(&log, "failed"), 0);
    assert_eq!(n(&log, "held"), 2, "held for a later delivery, not failed");
    assert_adds_up(&log);
    let failures = log["held_copies"].as_array().unwrap();
    let size = failures
        .iter()
        .find(|f| f["reason"] == "size_exceeded")
        .unwrap();
    assert_eq!(size["item_id"], "O2-20261120-C003");
    assert_eq!(size["mailbox"], "bob.jones@contoso.com");
    assert!(size["detail"]
        .as_str()
        .unwrap()
        .contains("exceeds the limit of 10485760 bytes"));
    let unmapped = failures
        .iter()
        .find(|f| f["reason"] == "user_mapping")
        .unwrap();
    assert_eq!(unmapped["item_id"], "O2-20261120-0010");
    assert_eq!(unmapped["source_user"], "+447700900199");
    assert_eq!(log["unmapped_users"], serde_json::json!(["+447700900199"]));
    assert!(unmapped["mailbox"].is_null());
    for held in failures {
        let kept = held["kept"].as_str().unwrap();
        assert!(
            dir.join("var/stage").join(kept).is_file(),
            "the held item is kept at {kept}"
        );
    }

    // Neither held item reached a mailbox.
    let all: Vec<Vec<u8>> = EXPECTED
        .iter()
        .flat_map(|(m, _)| messages(&mail, m, FOLDER))
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    for id in ["O2-20261120-C003", "O2-20261120-0010"] {
        assert!(
            !all.iter()
                .any(|m| header(m, "X-Comms-Archiver-Item-Id").as_deref() == Some(id)),
            "{id} was imported"
        );
    }

    // Fan-out: the SMS from Alice to Bob is in both mailboxes, with the same Message-ID.
    let copies: Vec<String> = ["alice.smith@contoso.com", "bob.jones@contoso.com"]
        .iter()
        .flat_map(|m| messages(&mail, m, FOLDER))
        .map(|p| std::fs::read(p).unwrap())
        .filter(|m| header(m, "X-Comms-Archiver-Item-Id").as_deref() == Some("O2-20261120-0003"))
        .map(|m| header(&m, "Message-ID").unwrap())
        .collect();
    assert_eq!(copies.len(), 2);
    assert_eq!(copies[0], copies[1]);

    // The CSV sits beside the JSON and says the same.
    let csv = std::fs::read_to_string(dir.join("var/stage/reports/o2/2026-11-20.csv")).unwrap();
    assert!(csv.starts_with("record,connector,day,"));
    assert_eq!(csv.lines().filter(|l| l.starts_with("held,")).count(), 2);
    assert_eq!(
        csv.lines()
            .filter(|l| l.starts_with("unmapped_user,o2,2026-11-20,"))
            .count(),
        1
    );

    // A second run imports nothing new: its own run log reports the copies as duplicates,
    // and the day still reads as the copies imported, once, over both runs.
    let first = report_json(dir, "2026-11-20");
    assert_eq!(once(dir, "2026-11-20"), Some(3));
    assert_eq!(counts(&mail, FOLDER), expected());
    let log = report_json(dir, "2026-11-20");
    for key in [
        "imported",
        "skipped_duplicates",
        "failed",
        "available_for_import",
    ] {
        assert_eq!(n(&log, key), n(&first, key), "{key}: {log}");
    }
    assert_eq!(log["runs"].as_array().unwrap().len(), 2, "{log}");
    assert_adds_up(&log);
    let runs = cli(
        dir,
        &[
            "report",
            "--config",
            "config/demo.toml",
            "--date",
            "2026-11-20",
        ],
    );
    assert!(runs.status.success());
    let args = [
        "report",
        "--config",
        "config/demo.toml",
        "--date",
        "2026-11-20",
        "--connector",
        "o2",
        "--runs",
        "--format",
        "json",
    ];
    let out = cli(dir, &args);
    let runs: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(runs.len(), 2, "{runs:?}");
    let second = &runs[1];
    assert_eq!(n(second, "imported"), 0);
    assert_eq!(n(second, "skipped_duplicates"), 17);
    assert_eq!(n(second, "held"), 2);
    assert_adds_up(second);
    assert_ne!(runs[0]["run"]["id"], second["run"]["id"]);
}

#[test]
fn every_message_is_strict_rfc5322_with_the_item_time() {
    let ws = workspace();
    let dir = ws.path();
    assert_eq!(once(dir, "2026-11-20"), Some(3));

    // Python's email package with raise_on_defect is the independent judge.
    let script = r#"
import email, email.policy, pathlib, sys
policy = email.policy.default.clone(raise_on_defect=True)
count = 0
for path in sorted(pathlib.Path(sys.argv[1]).glob('*/.INBOX.*/cur/*')):
    msg = email.message_from_bytes(path.read_bytes(), policy=policy)
    for name in ('Message-ID', 'Date', 'From', 'To'):
        if not msg[name]:
            sys.exit(f'{path}: no {name}')
    for part in msg.walk():
        if not part.is_multipart():
            part.get_content()
    count += 1
print(count)
"#;
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(dir.join("var/mail"))
        .output()
        .expect("python3 is needed to check messages independently");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "37",
        "all four partners"
    );

    let mail = dir.join("var/mail");
    for (mailbox, _) in EXPECTED {
        for path in messages(&mail, mailbox, FOLDER) {
            let raw = std::fs::read(&path).unwrap();
            let parsed = mail_parser::MessageParser::default().parse(&raw).unwrap();
            // Stored as read, with the item's own time as the file time (the received date).
            assert!(path.to_string_lossy().ends_with(":2,S"));
            let date = parsed.date().unwrap().to_timestamp();
            let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
            let mtime = mtime
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64;
            assert_eq!(date, mtime, "{}", path.display());
            // Participants without an email get a reserved, non-routable address; the only
            // other addresses are mailboxes and the email property the partner gave.
            for addr in parsed
                .from()
                .unwrap()
                .iter()
                .chain(parsed.to().unwrap().iter())
            {
                let a = addr.address().unwrap();
                assert!(
                    a.ends_with("@contoso.com")
                        || a.ends_with(".invalid")
                        || a == "j.doe@example.com",
                    "{a}"
                );
            }
        }
    }

    // The header-injection attempt stayed in a header value and the body.
    let alice = messages(&mail, "alice.smith@contoso.com", FOLDER);
    let hostile = alice
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .find(|m| header(m, "X-Comms-Archiver-Item-Id").as_deref() == Some("O2-20261120-0012"))
        .unwrap();
    let parsed = mail_parser::MessageParser::default()
        .parse(&hostile)
        .unwrap();
    assert!(parsed.header_raw("Bcc").is_none());
    assert!(parsed.header_raw("X-Injected").is_none());
    assert_eq!(
        parsed.from().unwrap().first().unwrap().name(),
        Some("Mr Wong Bcc: attacker@evil.example")
    );
    assert!(parsed.body_text(0).unwrap().contains("X-Injected: yes"));

    // The voice call carries its recording and its details.
    let call = alice
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .find(|m| header(m, "X-Comms-Archiver-Item-Id").as_deref() == Some("O2-20261120-C001"))
        .unwrap();
    let parsed = mail_parser::MessageParser::default().parse(&call).unwrap();
    assert_eq!(
        parsed.subject(),
        Some("Voice call from Alice Smith to Mr Wong (answered, 4m 12s)")
    );
    let body = parsed.body_text(0).unwrap();
    assert!(body.contains("Duration:   252 s (00:04:12)"), "{body}");
    assert!(body.contains("Outcome:    answered"));
    let recording = parsed.attachment(0).unwrap();
    assert_eq!(recording.attachment_name(), Some("O2-20261120-C001.wav"));
    assert_eq!(
        recording.contents(),
        std::fs::read(repo().join("fixtures/telemessage-o2/2026-11-20/media/O2-20261120-C001.wav"))
            .unwrap()
    );
}

#[test]
fn check_names_file_line_and_key() {
    let ws = workspace();
    let dir = ws.path();
    let out = cli(dir, &["check", "--config", "config/demo.toml"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let demo = std::fs::read_to_string(dir.join("config/demo.toml")).unwrap();
    let bad = demo.replace("[mailbox]\n", "[mailbox]\ncolour = \"blue\"\n");
    let line = bad.lines().position(|l| l.starts_with("colour")).unwrap() + 1;
    std::fs::write(dir.join("config/bad.toml"), bad).unwrap();
    let out = cli(dir, &["check", "--config", "config/bad.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "config/bad.toml line {line}, key `mailbox.colour`: unknown field `colour`"
        )),
        "{stderr}"
    );

    let mut csv = std::fs::read_to_string(dir.join("config/mapping-o2.csv")).unwrap();
    csv.push_str("+44 7700,frank@contoso.com,,\n");
    let line = csv.lines().count();
    std::fs::write(dir.join("config/mapping-o2.csv"), csv).unwrap();
    let out = cli(dir, &["check", "--config", "config/demo.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "mapping file config/mapping-o2.csv line {line}: '+44 7700' is not a valid phone number"
        )),
        "{stderr}"
    );
    // A run refuses to start on the same broken mapping, and imports nothing.
    assert_eq!(once(dir, "2026-11-20"), Some(2));
    assert!(!dir.join("var/mail").exists());

    // Usage errors also exit 2, and a connector that is not there is named with the file.
    assert_eq!(once(dir, "20/11/2026"), Some(2));
    std::fs::write(
        dir.join("config/mapping-o2.csv"),
        "identifier,mailbox,valid_from,valid_to\n",
    )
    .unwrap();
    let out = cli(
        dir,
        &[
            "once",
            "--config",
            "config/demo.toml",
            "--date",
            "2026-11-20",
            "--connector",
            "nope",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no enabled connector named 'nope' in config/demo.toml; configured: "),
        "{stderr}"
    );
}

#[test]
fn a_day_not_delivered_stays_open_and_exits_1() {
    let ws = workspace();
    let dir = ws.path();
    assert_eq!(once(dir, "2026-11-21"), Some(1));
    let log = report_json(dir, "2026-11-21");
    assert_eq!(log["complete"], false);
    assert_eq!(log["errors"][0]["reason"], "source_not_ready");
    assert!(!dir.join("var/stage/checkpoints/o2.json").exists());

    // Delivered empty: the day completes and says so.
    let day = dir.join("fixtures/telemessage-o2/2026-11-21");
    std::fs::create_dir_all(&day).unwrap();
    std::fs::write(
        day.join("MANIFEST.json"),
        r#"{"day":"2026-11-21","files":[]}"#,
    )
    .unwrap();
    // Only O2's delivery arrived; the other connectors' days stay open (exit 1), O2's is done.
    assert_eq!(once(dir, "2026-11-21"), Some(1));
    assert_eq!(report_json(dir, "2026-11-21")["complete"], true);
    let out = cli(
        dir,
        &[
            "report",
            "--config",
            "config/demo.toml",
            "--date",
            "2026-11-21",
        ],
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("No items ingested on 2026-11-21"));
}

#[test]
fn json_logs_carry_one_event_per_item_outcome() {
    let ws = workspace();
    let dir = ws.path();
    let out = demo_day(dir, &["--log-format", "json"]);
    let events: Vec<Value> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .filter(|e: &Value| e["target"] == "comms_archiver::item")
        .collect();
    assert_eq!(
        events.len(),
        19 + 11 + 7 + 5,
        "one per copy available for import (o2, whatsapp, sl2, merge1)"
    );
    for e in &events {
        for field in [
            "connector",
            "day",
            "item_key",
            "item_id",
            "mailbox",
            "outcome",
        ] {
            assert!(e.get(field).is_some(), "{field} missing in {e}");
        }
    }
    assert_eq!(
        events.iter().filter(|e| e["outcome"] == "imported").count(),
        16 + 11 + 6 + 4
    );
}

#[test]
fn example_config_documents_a_valid_configuration() {
    let path = repo().join("config/example.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let config = comms_archiver::config::Config::from_toml(&path, &text, &[]).unwrap();
    assert_eq!(config.connectors["o2"].folder(), FOLDER);
}

/// Copies every partner's demo delivery of 2026-11-20 as the delivery of another day.
pub(crate) fn deliver_demo_as(dir: &Path, day: chrono::NaiveDate) {
    if day.to_string() == "2026-11-20" {
        return;
    }
    for partner in [
        "telemessage-o2",
        "telemessage-whatsapp",
        "celltrust-sl2",
        "merge1-celltrust",
    ] {
        let drop = dir.join("fixtures").join(partner);
        let target = drop.join(day.to_string());
        copy_tree(&drop.join("2026-11-20"), &target);
        let manifest = std::fs::read_to_string(target.join("MANIFEST.json")).unwrap();
        std::fs::write(
            target.join("MANIFEST.json"),
            manifest.replace("2026-11-20", &day.to_string()),
        )
        .unwrap();
    }
}

#[test]
fn backfill_processes_a_range_and_resumes() {
    let ws = workspace();
    let dir = ws.path();
    let backfill = [
        "backfill",
        "--config",
        "config/demo.toml",
        "--from",
        "2026-11-19",
        "--to",
        "2026-11-20",
    ];
    // The 19th was never delivered: the 20th is done, the 19th stays open.
    let out = cli(dir, &backfill);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(counts(&dir.join("var/mail"), FOLDER), expected());
    assert_eq!(
        report_json(dir, "2026-11-19")["errors"][0]["reason"],
        "source_not_ready"
    );

    // Once it is delivered, the same backfill finishes the 19th and skips the 20th.
    deliver_demo_as(dir, chrono::NaiveDate::from_ymd_opt(2026, 11, 19).unwrap());
    let out = cli(dir, &backfill);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("already complete; skipped"), "{stderr}");
    // The 19th's copy of the delivery holds the same items: all duplicates.
    assert_eq!(n(&report_json(dir, "2026-11-19"), "skipped_duplicates"), 17);
    let checkpoint = std::fs::read_to_string(dir.join("var/stage/checkpoints/o2.json")).unwrap();
    assert!(checkpoint.contains("2026-11-20"), "{checkpoint}");

    let out = cli(
        dir,
        &[
            "backfill",
            "--config",
            "config/demo.toml",
            "--from",
            "2026-11-20",
            "--to",
            "2026-11-19",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
}

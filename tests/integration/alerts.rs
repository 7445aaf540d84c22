//! The digest reaches the admins: by email through a real SMTP server on loopback (Python's
//! aiosmtpd), read back from its Maildir, and by webhook to a local receiver; its counts are
//! the status logs'. A channel that is down keeps its digest for the next run and never
//! fails the archiving.

use crate::support::*;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::mpsc;

/// An SMTP server on a free loopback port, storing what it receives in a Maildir; stopped
/// by pid when dropped.
struct Smtp {
    child: std::process::Child,
    port: u16,
}

impl Smtp {
    fn start(maildir: &Path) -> Smtp {
        let port = free_port();
        let smtp = Smtp {
            child: std::process::Command::new("python3")
                .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
                .args(["-c", "aiosmtpd.handlers.Mailbox"])
                .arg(maildir)
                .spawn()
                .expect("python3 with aiosmtpd (installed by .ci/run)"),
            port,
        };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return smtp;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("aiosmtpd did not start on port {port}");
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A webhook receiver: answers 200 to each POST and hands its JSON body over.
fn receiver() -> (u16, mpsc::Receiver<Value>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let _ = tx.send(serde_json::from_slice(&body).unwrap_or(Value::Null));
        }
    });
    (port, rx)
}

fn with_alerts(dir: &Path, smtp_port: u16) {
    let path = dir.join("config/demo.toml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&format!(
        "\n[alerts.email]\nhost = \"127.0.0.1\"\nport = {smtp_port}\nsecurity = \"plain\"\n\
         allow_plaintext_loopback = true\nfrom = \"comms-archiver@contoso.com\"\n\
         to = [\"compliance@contoso.com\", \"it-ops@contoso.com\"]\n\
         [alerts.webhook]\nurl = {{ env = \"HOOK_URL\" }}\nallow_http_loopback = true\n"
    ));
    std::fs::write(path, text).unwrap();
}

fn once_with_hook(dir: &Path, hook: &str) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_comms-archiver"))
        .args(["once", "--config", "config/demo.toml", "--date", DEMO_DATE])
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env("HOOK_URL", hook)
        .output()
        .unwrap()
}

#[test]
fn the_digest_reaches_the_mailbox_and_the_webhook_with_the_status_logs_counts() {
    let ws = workspace();
    let dir = ws.path();
    let received = dir.join("received");
    let smtp = Smtp::start(&received);
    let (hook_port, posts) = receiver();
    with_alerts(dir, smtp.port);
    let out = finished(once_with_hook(
        dir,
        &format!("http://127.0.0.1:{hook_port}/hook"),
    ));

    let logs = demo_logs(dir);
    let failed: u64 = logs.values().map(|l| l.failed).sum();
    let held: u64 = logs.values().map(|l| l.held_copies.len() as u64).sum();
    let imported: u64 = logs.values().map(|l| l.imported).sum();
    assert!(failed + held > 0, "the demo day has copies to tell of");

    // The webhook: one post, the chat text and the structured digest.
    let post = posts
        .recv_timeout(std::time::Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("no webhook post: {}", String::from_utf8_lossy(&out.stderr)));
    let text = post["text"].as_str().unwrap();
    let headline = format!(
        "comms-archiver: {failed} failed, {held} held, 0 day(s) open, {imported} imported - needs attention"
    );
    assert!(text.starts_with(&headline), "{text}");
    for part in post["digest"]["connectors"].as_array().unwrap() {
        let name = part["connector"].as_str().unwrap();
        let day = &part["days"][0];
        assert_eq!(day["failed"].as_u64(), Some(logs[name].failed), "{name}");
        let held: u64 = day["held"]
            .as_object()
            .map_or(0, |h| h.values().map(|n| n.as_u64().unwrap()).sum());
        assert_eq!(held, logs[name].held_copies.len() as u64, "{name}");
        assert_eq!(
            day["imported"].as_u64(),
            Some(logs[name].imported),
            "{name}"
        );
    }
    // The chat channel gets counts, not the numbers of unmapped users.
    let unmapped: Vec<&String> = logs
        .values()
        .flat_map(|l| l.unmapped_users.iter())
        .collect();
    assert!(!unmapped.is_empty());
    assert!(
        unmapped.iter().all(|u| !text.contains(u.as_str())),
        "{text}"
    );
    assert!(
        posts
            .recv_timeout(std::time::Duration::from_millis(300))
            .is_err(),
        "one digest per run"
    );

    // The email: one message to both recipients, the same headline, the users named.
    let new = received.join("new");
    let mails: Vec<_> = std::fs::read_dir(&new)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(mails.len(), 1, "{mails:?}");
    let raw = std::fs::read(&mails[0]).unwrap();
    let message = mail_parser::MessageParser::default().parse(&raw).unwrap();
    assert_eq!(message.subject(), Some(headline.as_str()));
    let to: Vec<&str> = message
        .to()
        .unwrap()
        .iter()
        .filter_map(|a| a.address())
        .collect();
    assert_eq!(to, ["compliance@contoso.com", "it-ops@contoso.com"]);
    let body = message.body_text(0).unwrap();
    assert!(unmapped.iter().all(|u| body.contains(u.as_str())), "{body}");
    assert!(
        body.contains("see: comms-archiver report --date 2026-11-20 --connector o2"),
        "{body}"
    );
    assert!(message.body_html(0).is_some());
    drop(smtp);
}

#[test]
fn a_digest_that_cannot_be_sent_waits_for_the_next_run() {
    let ws = workspace();
    let dir = ws.path();
    let received = dir.join("received");
    let smtp = Smtp::start(&received);
    with_alerts(dir, smtp.port);
    // Nobody listens at the webhook: the day is archived all the same.
    let closed = format!("http://127.0.0.1:{}/hook", free_port());
    let out = finished(once_with_hook(dir, &closed));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("the digest could not be sent"), "{stderr}");
    assert!(
        !stderr.contains("/hook"),
        "the webhook's URL is a secret: {stderr}"
    );
    let waiting = dir.join("var/stage/alerts/pending/webhook.json");
    assert!(waiting.exists());

    // The next run sends what waited, then its own digest, and the outbox is empty.
    let (hook_port, posts) = receiver();
    let hook = format!("http://127.0.0.1:{hook_port}/hook");
    finished(once_with_hook(dir, &hook));
    let wait = std::time::Duration::from_secs(10);
    let (waited, own) = (
        posts.recv_timeout(wait).unwrap(),
        posts.recv_timeout(wait).unwrap(),
    );
    let at = |p: &Value| p["digest"]["generated_at"].as_str().unwrap().to_string();
    assert!(at(&waited) < at(&own), "the waiting digest first");
    assert!(waited["text"].as_str().unwrap().contains("needs attention"));
    let short = std::time::Duration::from_millis(300);
    assert!(posts.recv_timeout(short).is_err(), "two posts, no more");
    assert_eq!(std::fs::read(&waiting).unwrap(), b"null");
    drop(smtp);
}

/// A cron job or systemd timer sees what needs a person: exit 3 when every day is complete
/// but copies are held or failed for good, 0 when nothing is left for anyone.
#[test]
fn exit_3_says_a_complete_day_has_copies_held_or_failed_for_good() {
    let ws = workspace();
    let dir = ws.path();
    let once = |connector: &str| {
        let args = ["once", "--config", "config/demo.toml", "--date", DEMO_DATE];
        cli(dir, &[&args[..], &["--connector", connector]].concat())
    };
    // WhatsApp's demo day: every copy imported.
    assert_eq!(once("whatsapp").status.code(), Some(0));
    // O2's: complete, with a user that maps to no one and a call over the size limit.
    let out = once("o2");
    assert_eq!(out.status.code(), Some(3));
    let log = &demo_logs_of(dir, "o2");
    assert!(log.complete && log.failures.iter().all(|f| !f.reason.is_retried()));
    assert!(!log.held_copies.is_empty());
}

fn demo_logs_of(dir: &Path, connector: &str) -> comms_archiver::report::StatusLog {
    let path = dir.join(format!("var/stage/reports/{connector}/{DEMO_DATE}.json"));
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// A mapped employee with no copy for `silent_user_days` complete days is named in the
/// email (counted in the chat message): a phone that stopped archiving.
#[test]
fn a_mapped_number_without_copies_is_a_silent_user() {
    let ws = workspace();
    let dir = ws.path();
    let csv = dir.join("config/mapping-o2.csv");
    let mut rows = std::fs::read_to_string(&csv).unwrap();
    rows.push_str("+447700900107,grace.hall@contoso.com,,\n");
    std::fs::write(&csv, rows).unwrap();
    let path = dir.join("config/demo.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{text}\n[alerts]\nsilent_user_days = 1\n")).unwrap();
    let received = dir.join("received");
    let smtp = Smtp::start(&received);
    with_alerts(dir, smtp.port);
    let (hook_port, posts) = receiver();
    let args = [
        "once",
        "--config",
        "config/demo.toml",
        "--date",
        DEMO_DATE,
        "--connector",
        "o2",
    ];
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_comms-archiver"))
        .args(args)
        .current_dir(dir)
        .env("HOOK_URL", format!("http://127.0.0.1:{hook_port}/hook"))
        .output()
        .unwrap();
    finished(out);
    let post = posts
        .recv_timeout(std::time::Duration::from_secs(10))
        .unwrap();
    let o2 = &post["digest"]["connectors"][0];
    assert_eq!(
        o2["silent_users"],
        serde_json::json!(["+447700900107 (grace.hall@contoso.com)"]),
        "only the number without copies: {o2}"
    );
    let text = post["text"].as_str().unwrap();
    assert!(
        text.contains("o2: 1 mapped user(s) silent lately"),
        "{text}"
    );
    assert!(!text.contains("+447700900107"), "{text}");
    let mail = std::fs::read_dir(received.join("new"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let raw = String::from_utf8_lossy(&std::fs::read(mail.path()).unwrap()).to_string();
    assert!(
        raw.contains("+447700900107 (grace.hall@contoso.com)"),
        "{raw}"
    );
    drop(smtp);
}

/// A complete day without items, from a connector whose last complete days averaged more
/// than `silent_source_items`, is a silent source: is the partner still delivering?
#[test]
fn a_day_without_items_after_busy_days_is_a_silent_source() {
    let ws = workspace();
    let dir = ws.path();
    for day in 13..=19 {
        crate::cli::deliver_demo_as(dir, chrono::NaiveDate::from_ymd_opt(2026, 11, day).unwrap());
    }
    let empty = dir.join("fixtures/telemessage-whatsapp/2026-11-21");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(
        empty.join("MANIFEST.json"),
        r#"{"day": "2026-11-21", "files": []}"#,
    )
    .unwrap();
    let path = dir.join("config/demo.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        format!("{text}\n[alerts]\nsilent_source_items = 5\nsilent_user_days = 0\n"),
    )
    .unwrap();
    let smtp = Smtp::start(&dir.join("received"));
    with_alerts(dir, smtp.port);
    let (hook_port, posts) = receiver();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_comms-archiver"))
            .args(args)
            .args(["--config", "config/demo.toml", "--connector", "whatsapp"])
            .current_dir(dir)
            .env("HOOK_URL", format!("http://127.0.0.1:{hook_port}/hook"))
            .output()
            .unwrap()
    };
    assert_eq!(
        run(&["backfill", "--from", "2026-11-13", "--to", "2026-11-19"])
            .status
            .code(),
        Some(0)
    );
    // Seven busy days, nothing to tell: no digest.
    assert!(posts
        .recv_timeout(std::time::Duration::from_millis(500))
        .is_err());
    assert_eq!(
        run(&["once", "--date", "2026-11-21"]).status.code(),
        Some(0)
    );
    let post = posts
        .recv_timeout(std::time::Duration::from_secs(10))
        .unwrap();
    let day = &post["digest"]["connectors"][0]["days"][0];
    assert_eq!(day["day"], "2026-11-21", "{post}");
    assert_eq!(day["silent_source"], true, "{post}");
    assert!(post["text"]
        .as_str()
        .unwrap()
        .contains("is the partner delivering?"));
    drop(smtp);
}

//! Kills, a stop, a full disk and clients that misbehave: nothing acknowledged is lost, nothing
//! unacknowledged is kept half.

use super::*;
use crate::support::*;
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

#[test]
fn a_daemon_killed_after_a_250_and_during_data_imports_each_message_once() {
    let ws = workspace();
    let dir = ws.path();
    let port = free_port();
    smtp_config(dir, port, &[]);
    let mut running = daemon(dir, port);
    // One sender is in the middle of its message, another has just sent all of its own.
    let mut partial = in_data(port);
    let b = message("TM-KILL-B", "sent while the daemon died");
    partial.write_all(&b.as_bytes()[..200]).unwrap();
    let mut whole = in_data(port);
    let a = message("TM-KILL-A", "acknowledged just before the daemon died");
    whole.write_all(format!("{a}.\r\n").as_bytes()).unwrap();
    let answer = reply(&mut whole);
    // SIGKILL right after the 250: nothing can be finished or cleaned up.
    running.kill().unwrap();
    running.wait().unwrap();
    assert!(answer.starts_with("250 2.0.0"), "{answer}");
    drop((partial, whole));

    // The senders retry: B was never acknowledged, and A's sender did not see its reply.
    let running = daemon(dir, port);
    std::fs::write(dir.join("a.eml"), &a).unwrap();
    std::fs::write(dir.join("b.eml"), &b).unwrap();
    let replies = python(
        &["send", &port.to_string(), RCPT, "b.eml", "a.eml"]
            .map(|s| s.to_string())
            .iter()
            .map(|s| {
                if s.ends_with(".eml") {
                    dir.join(s).to_string_lossy().into_owned()
                } else {
                    s.clone()
                }
            })
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert_eq!(replies.len(), 2);
    assert!(replies.iter().all(|r| r["code"] == 250), "{replies:?}");
    stop(running);

    // The restarted daemon may have run the 20th itself (a day before its window), while the
    // senders were retrying: what came after is in the 21st. Both days, every message once.
    let out = cli(
        dir,
        &[
            "backfill",
            "--config",
            "config/smtp.toml",
            "--from",
            DEMO_DATE,
            "--to",
            "2026-11-21",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (mut available, mut imported, mut skipped) = (0, 0, 0);
    for day in [DEMO_DATE, "2026-11-21"] {
        let path = dir.join(format!("var/stage/reports/o2/{day}.json"));
        let log: comms_archiver::report::StatusLog =
            serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        assert!(log.complete && log.failed == 0, "{day}: {log:?}");
        available += log.available_from_source;
        imported += log.imported;
        skipped += log.skipped_duplicates;
    }
    assert_eq!(imported, 2, "A and B, each once");
    assert_eq!(
        available,
        imported + skipped,
        "a message kept in both days is skipped once"
    );
    let alice = messages(&dir.join("var/mail"), "alice.smith@contoso.com", FOLDER);
    let ids: Vec<String> = alice
        .iter()
        .map(|p| header(&std::fs::read(p).unwrap(), "X-TELEMESSAGE-ArchiveMessageID").unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(ids.contains(&"TM-KILL-A".to_string()) && ids.contains(&"TM-KILL-B".to_string()));
    // Nothing half-written is left where the day's run reads.
    let kept = dir.join("var/stage/intake/o2/2026-11-20/messages");
    let names: Vec<String> = std::fs::read_dir(&kept)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert!(names.iter().all(|n| n.ends_with(".eml")), "{names:?}");
    assert!(!names.is_empty() && names.len() <= 2, "{names:?}");
}

#[test]
fn clients_that_misbehave_are_told_why_and_nothing_of_theirs_is_kept() {
    let ws = workspace();
    let dir = ws.path();
    let port = free_port();
    smtp_config(dir, port, &[]);
    let running = daemon(dir, port);
    let start = format!(
        "EHLO sender.test\r\nMAIL FROM:<a@telemessage.example>\r\nRCPT TO:<{RCPT}>\r\nDATA\r\n"
    );
    // A bare LF in the message: 521 and the connection closed (no smuggled second message).
    let smuggled = message("TM-LF", "one\n.\nMAIL FROM:<x@y.example>");
    let answer = raw(port, format!("{start}{smuggled}.\r\n").as_bytes());
    assert!(answer.contains("521 5.5.2 bare LF"), "{answer}");
    // NUL octets.
    let answer = raw(
        port,
        format!("{start}{}.\r\nQUIT\r\n", message("TM-NUL", "a\0b")).as_bytes(),
    );
    assert!(
        answer.contains("550 5.6.0 the message holds NUL"),
        "{answer}"
    );
    // A 10,000-octet command line, then a 10,000-octet line in a message, which is kept.
    let long = format!("{}\r\n", "X".repeat(10_000));
    let text = "y".repeat(10_000);
    let answer = raw(
        port,
        format!("{long}{start}{}.\r\nQUIT\r\n", message("TM-LONG", &text)).as_bytes(),
    );
    assert!(answer.contains("500 5.5.2 line too long"), "{answer}");
    assert!(answer.contains("250 2.0.0 Ok: kept"), "{answer}");
    // AUTH before STARTTLS, where AUTH is not even offered.
    let answer = raw(port, b"EHLO sender.test\r\nAUTH PLAIN AHUAcA==\r\nQUIT\r\n");
    assert!(answer.contains("503 5.5.1 AUTH is not offered"), "{answer}");
    // An unknown recipient, refused at RCPT; a message the connector cannot read, at DATA.
    let answer = raw(
        port,
        b"EHLO s.test\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<sales@archive.contoso.com>\r\nQUIT\r\n",
    );
    assert!(answer.contains("550 5.1.1"), "{answer}");
    let unreadable =
        message("TM-NOBODY", "x").replace("X-TELEMESSAGE-ArchiveInitiator: 447700900101\r\n", "");
    let answer = raw(port, format!("{start}{unreadable}.\r\nQUIT\r\n").as_bytes());
    assert!(
        answer.contains(
            "550 5.6.0 cannot be archived: the message has no X-TELEMESSAGE-ArchiveInitiator"
        ),
        "{answer}"
    );
    // A hundred senders at once.
    std::fs::write(
        dir.join("template.eml"),
        message("TM-MANY-{n}", "one of a hundred"),
    )
    .unwrap();
    let template = dir.join("template.eml");
    let replies = python(&[
        "concurrent",
        &port.to_string(),
        RCPT,
        "100",
        template.to_str().unwrap(),
    ]);
    assert_eq!(replies.len(), 100);
    assert!(replies.iter().all(|r| r["code"] == 250), "{replies:?}");
    stop(running);

    // Outside the allowlist: refused before the greeting.
    smtp_config(
        dir,
        port,
        &[("allow = [\"127.0.0.0/8\"]", "allow = [\"10.0.0.0/8\"]")],
    );
    let running = daemon(dir, port);
    let answer = raw(port, b"EHLO s.test\r\n");
    assert!(
        answer.starts_with("554 5.7.1 127.0.0.1 is not allowed"),
        "{answer}"
    );
    stop(running);

    let out = once(dir);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = o2_log(dir);
    assert_eq!(
        (log.available_from_source, log.imported, log.failed),
        (101, 101, 0)
    );
    let alice = messages(&dir.join("var/mail"), "alice.smith@contoso.com", FOLDER);
    assert_eq!(alice.len(), 101);
    let long_one = alice
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .find(|m| header(m, "X-TELEMESSAGE-ArchiveMessageID").as_deref() == Some("TM-LONG"))
        .unwrap();
    assert!(
        body(&long_one).starts_with(text.as_bytes()),
        "the long line kept whole"
    );
}

#[test]
fn a_stop_tells_senders_421_and_the_run_refuses_an_intake_that_lost_a_message() {
    let ws = workspace();
    let dir = ws.path();
    let port = free_port();
    smtp_config(dir, port, &[]);
    let running = daemon(dir, port);
    std::fs::write(dir.join("one.eml"), message("TM-STOP-1", "kept")).unwrap();
    std::fs::write(dir.join("two.eml"), message("TM-STOP-2", "kept too")).unwrap();
    let sent = python(&[
        "send",
        &port.to_string(),
        RCPT,
        dir.join("one.eml").to_str().unwrap(),
        dir.join("two.eml").to_str().unwrap(),
    ]);
    assert!(sent.iter().all(|r| r["code"] == 250), "{sent:?}");
    // SIGTERM while a sender is in the middle of its message: it is told 421, and what it
    // sent so far is not kept.
    let mut partial = in_data(port);
    partial
        .write_all(&message("TM-STOP-3", "never finished").as_bytes()[..150])
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let waiting = std::thread::spawn(move || reply(&mut partial));
    std::thread::sleep(Duration::from_millis(100));
    let _ = Command::new("kill")
        .args(["-TERM", &running.id().to_string()])
        .status();
    let told = waiting.join().unwrap();
    assert!(told.starts_with("421 4.3.2"), "{told}");
    stop(running);

    // One acknowledged message goes missing from the stage: the day is not imported.
    let kept = dir.join("var/stage/intake/o2/2026-11-20/messages");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&kept)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 2, "TM-STOP-3 was not kept");
    files.sort();
    let lost = files.pop().unwrap();
    let saved = std::fs::read(&lost).unwrap();
    std::fs::remove_file(&lost).unwrap();
    let out = once(dir);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = o2_log(dir);
    assert!(!log.complete);
    assert_eq!(log.errors[0].reason, "reconciliation");
    assert!(
        log.errors[0].detail.contains(
            "acknowledged 2 message(s) for 2026-11-20, but 1 of them are not in the stage"
        ),
        "{}",
        log.errors[0].detail
    );
    assert!(
        !dir.join("var/mail").exists(),
        "nothing of the day is imported"
    );
    // Restored, the day goes through.
    std::fs::write(&lost, saved).unwrap();
    let out = once(dir);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(o2_log(dir).imported, 2);
}

/// A real full disk under the stage: a 4 MiB tmpfs in a private mount namespace (as in
/// `disk_full.rs`), filled while the daemon listens, emptied, then the day run, all inside
/// the namespace.
#[test]
fn a_full_intake_disk_answers_451_and_nothing_half_written_is_read() {
    let ws = workspace();
    let dir = ws.path();
    let port = free_port();
    smtp_config(dir, port, &[]);
    std::fs::create_dir_all(dir.join("var/stage")).unwrap();
    std::fs::create_dir_all(dir.join("out")).unwrap();
    let body = "z".repeat(64 * 1024);
    let mut files = Vec::new();
    for i in 0..3 {
        let path = dir.join(format!("full-{i}.eml"));
        std::fs::write(&path, message(&format!("TM-FULL-{i}"), &body)).unwrap();
        files.push(path.to_string_lossy().into_owned());
    }
    let binary = env!("CARGO_BIN_EXE_comms-archiver");
    let client = client_script();
    let client = client.display();
    let files = files.join(" ");
    let script = format!(
        r#"set -u
mount -t tmpfs -o size=4m tmpfs var/stage || exit 90
"{binary}" run --config config/smtp.toml >out/daemon.txt 2>&1 &
daemon=$!
for i in $(seq 1 600); do
  python3 -c "import socket; socket.create_connection(('127.0.0.1', {port}), 1)" 2>/dev/null && break
  sleep 0.1
done
sleep 1
dd if=/dev/zero of=var/stage/filler bs=4k status=none 2>/dev/null
python3 "{client}" send {port} {RCPT} {files} >out/full.json 2>&1
rm var/stage/filler
python3 "{client}" send {port} {RCPT} {files} >out/freed.json 2>&1
kill -TERM $daemon; wait $daemon
echo $? >out/daemon.code
find var/stage/intake -type f >out/files.txt
"{binary}" once --config config/smtp.toml --date 2026-11-20 >out/once.txt 2>&1
echo $? >out/once.code
cp -r var/stage/reports out/reports
"#
    );
    let status = Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "sh", "-c", &script])
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .status()
        .expect("unshare runs (util-linux)");
    assert_eq!(status.code(), Some(0), "the namespace could not be set up");
    let read = |name: &str| std::fs::read_to_string(dir.join("out").join(name)).unwrap();
    let replies = |name: &str| -> Vec<serde_json::Value> {
        read(name)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let full = replies("full.json");
    assert_eq!(full.len(), 3, "{}", read("full.json"));
    assert!(
        full.iter().all(|r| r["code"] == 451),
        "{full:?}\n{}",
        read("daemon.txt")
    );
    let freed = replies("freed.json");
    assert!(freed.iter().all(|r| r["code"] == 250), "{freed:?}");
    assert_eq!(read("daemon.code").trim(), "0", "{}", read("daemon.txt"));
    assert!(
        read("daemon.txt").contains("No space left on device"),
        "the operator is told why: {}",
        read("daemon.txt")
    );
    // What is in the intake: the three messages and their records, nothing partial.
    let kept: Vec<String> = read("files.txt").lines().map(str::to_string).collect();
    assert!(kept.iter().all(|f| !f.contains("/.tmp")), "{kept:?}");
    assert_eq!(
        kept.iter().filter(|f| f.ends_with(".eml")).count(),
        3,
        "{kept:?}"
    );
    assert_eq!(read("once.code").trim(), "0", "{}", read("once.txt"));
    let log: comms_archiver::report::StatusLog =
        serde_json::from_slice(&std::fs::read(dir.join("out/reports/o2/2026-11-20.json")).unwrap())
            .unwrap();
    assert_eq!((log.available_from_source, log.imported), (3, 3));
}

//! The SMTP intake from outside: the daemon (`run`) listening on a loopback port, spoken to
//! by clients that are not ours (Python's smtplib, raw sockets from Python, swaks), killed
//! and stopped in the middle of things; then the day's run, which must import every
//! acknowledged message exactly once.

use crate::support::*;
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const RCPT: &str = "o2-archive@archive.contoso.com";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The workspace's config/smtp.toml: config/demo-smtp.toml on `port`, with `edits`.
fn smtp_config(dir: &Path, port: u16, edits: &[(&str, &str)]) {
    let demo = std::fs::read_to_string(dir.join("config/demo-smtp.toml")).unwrap();
    let listen = format!("listen = \"127.0.0.1:{port}\"");
    let mut all = vec![
        ("listen = \"127.0.0.1:2525\"", listen.as_str()),
        ("\"var/smtp/", "\"var/"),
    ];
    all.extend_from_slice(edits);
    std::fs::write(dir.join("config/smtp.toml"), patched(&demo, &all)).unwrap();
}

/// `run` in `dir`, once its intake accepts connections on `port`.
fn daemon(dir: &Path, port: u16) -> Child {
    let log = std::fs::File::create(dir.join(format!(
        "daemon-{}.log",
        Instant::now().elapsed().as_nanos()
    )))
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_comms-archiver"))
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
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the daemon exited {status} before listening");
        }
        assert!(
            Instant::now() < deadline,
            "the intake never listened on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

fn client_script() -> PathBuf {
    repo().join("tests/integration/smtp_client.py")
}

/// Runs the Python client; one JSON reply per message.
fn python(args: &[&str]) -> Vec<serde_json::Value> {
    let out = Command::new("python3")
        .arg(client_script())
        .args(args)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// What the intake answers to `bytes` sent raw, as text.
fn raw(port: u16, bytes: &[u8]) -> String {
    let mut child = Command::new("python3")
        .arg(client_script())
        .args(["raw", &port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The EML files of the demo day's TeleMessage ZIP, written out under `dir/eml`.
fn demo_emls(dir: &Path) -> Vec<PathBuf> {
    let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
    let messages =
        comms_archiver_testkit::smtp::day_messages(&dir.join("fixtures/telemessage-zip"), day)
            .unwrap();
    std::fs::create_dir_all(dir.join("eml")).unwrap();
    messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let path = dir.join(format!("eml/{i}.eml"));
            std::fs::write(&path, m).unwrap();
            path
        })
        .collect()
}

fn once(dir: &Path) -> std::process::Output {
    cli(
        dir,
        &["once", "--config", "config/smtp.toml", "--date", DEMO_DATE],
    )
}

fn o2_log(dir: &Path) -> comms_archiver::report::StatusLog {
    let path = dir.join("var/stage/reports/o2/2026-11-20.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Every message of every mailbox's folder, by mailbox, sorted.
fn mailboxes(mail: &Path) -> Vec<(String, Vec<Vec<u8>>)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(mail) else {
        return out;
    };
    for entry in entries {
        let who = entry.unwrap().file_name().to_string_lossy().into_owned();
        let mut bodies: Vec<Vec<u8>> = messages(mail, &who, FOLDER)
            .iter()
            .map(|p| std::fs::read(p).unwrap())
            .collect();
        bodies.sort();
        out.push((who, bodies));
    }
    out.sort();
    out
}

/// The body of a message: what follows its header block.
fn body(raw: &[u8]) -> &[u8] {
    let at = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    &raw[at + 4..]
}

#[test]
fn the_demo_day_over_smtp_lands_where_the_zip_drop_puts_it() {
    // The ZIP drop's run of the day.
    let zipped = workspace();
    let demo = std::fs::read_to_string(zipped.path().join("config/demo.toml")).unwrap();
    let zip_config = patched(
        &demo,
        &[(
            "transport = \"drop\"\npath = \"fixtures/telemessage-o2\"",
            "transport = \"zip-drop\"\npath = \"fixtures/telemessage-zip\"",
        )],
    );
    std::fs::write(zipped.path().join("config/zip.toml"), zip_config).unwrap();
    let out = cli(
        zipped.path(),
        &[
            "once",
            "--config",
            "config/zip.toml",
            "--date",
            DEMO_DATE,
            "--connector",
            "o2",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The same day sent by the simulator to the daemon's intake, then run.
    let ws = workspace();
    let dir = ws.path();
    let port = free_port();
    smtp_config(dir, port, &[]);
    let running = daemon(dir, port);
    let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
    let messages =
        comms_archiver_testkit::smtp::day_messages(&dir.join("fixtures/telemessage-zip"), day)
            .unwrap();
    let options = comms_archiver_testkit::smtp::SendOptions {
        connections: 2,
        ..Default::default()
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sent = rt
        .block_on(comms_archiver_testkit::smtp::send(
            &format!("127.0.0.1:{port}"),
            RCPT,
            messages.clone(),
            &options,
        ))
        .unwrap();
    assert_eq!(sent, 3);
    // A sender that lost the replies sends the day again: nothing new is kept.
    let again = python(
        &[
            &["send", &port.to_string(), RCPT][..],
            &demo_emls(dir)
                .iter()
                .map(|p| p.to_str().unwrap())
                .collect::<Vec<_>>(),
        ]
        .concat(),
    );
    assert!(again.iter().all(|r| r["code"] == 250), "{again:?}");
    stop(running);

    let out = once(dir);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (over_smtp, over_zip) = (
        mailboxes(&dir.join("var/mail")),
        mailboxes(&zipped.path().join("var/mail")),
    );
    assert_eq!(over_smtp.len(), 2, "alice and bob: {over_smtp:?}");
    let names = |m: &[(String, Vec<Vec<u8>>)]| {
        m.iter()
            .map(|(w, b)| (w.clone(), b.len()))
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&over_smtp), names(&over_zip));
    for ((_, smtp), (_, zip)) in over_smtp.iter().zip(&over_zip) {
        for (a, b) in smtp.iter().zip(zip) {
            assert_eq!(body(a), body(b), "the body, byte for byte");
            assert_eq!(a, b, "and the whole message, tracking headers included");
        }
    }
    let log = o2_log(dir);
    assert_eq!(
        (log.available_from_source, log.imported, log.failed),
        (3, 3, 0)
    );
    assert!(log.complete);
}

/// A TeleMessage message of the demo day from Alice's number, with its own id.
fn message(id: &str, text: &str) -> String {
    format!(
        "From: \"447700900101\" <alice.smith@contoso.com>\r\n\
         To: \"447700900555\" <447700900555@sms.telemessage.example>\r\n\
         Date: Fri, 20 Nov 2026 10:00:00 +0000\r\n\
         Message-ID: <{id}@telemessage.example>\r\n\
         Subject: SMS message\r\n\
         X-TELEMESSAGE-ArchiveMessageID: {id}\r\n\
         X-TELEMESSAGE-ArchiveInitiator: 447700900101\r\n\
         X-TELEMESSAGE-MessageType: SMS\r\n\
         \r\n\
         {text}\r\n"
    )
}

/// Reads one whole reply from a raw connection.
fn reply(stream: &mut TcpStream) -> String {
    use std::io::Read;
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        if stream.read(&mut byte).unwrap_or(0) == 0 {
            break;
        }
        seen.push(byte[0]);
        if seen.ends_with(b"\r\n") {
            let last = seen[..seen.len() - 2]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |p| p + 1);
            if seen.len() - last > 3 && seen[last + 3] == b' ' {
                break;
            }
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

/// A raw connection with a transaction open up to DATA's 354.
fn in_data(port: u16) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    assert!(reply(&mut s).starts_with("220"));
    for (command, code) in [
        ("EHLO sender.test\r\n", "250"),
        ("MAIL FROM:<archive@telemessage.example>\r\n", "250"),
        (&format!("RCPT TO:<{RCPT}>\r\n")[..], "250"),
        ("DATA\r\n", "354"),
    ] {
        s.write_all(command.as_bytes()).unwrap();
        let answer = reply(&mut s);
        assert!(answer.starts_with(code), "{command}: {answer}");
    }
    s
}

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

    let out = once(dir);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = o2_log(dir);
    assert_eq!(
        (
            log.available_from_source,
            log.imported,
            log.skipped_duplicates,
            log.failed
        ),
        (2, 2, 0, 0)
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
    assert_eq!(names.len(), 2, "{names:?}");
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

/// A CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl.
fn certificates(dir: &Path) -> PathBuf {
    let tls = dir.join("tls");
    std::fs::create_dir_all(&tls).unwrap();
    let script = r#"set -e
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
key ca.key
openssl req -x509 -new -key ca.key -out ca.pem -days 2 -subj "/CN=intake test CA" 2>/dev/null
for who in server client; do
  key $who.key
  openssl req -new -key $who.key -out $who.csr -subj "/CN=$who" 2>/dev/null
done
printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >server.ext
printf 'extendedKeyUsage=clientAuth\n' >client.ext
for who in server client; do
  openssl x509 -req -in $who.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
    -extfile $who.ext -out $who.pem 2>/dev/null
done
"#;
    let status = Command::new("sh")
        .args(["-c", script])
        .current_dir(&tls)
        .status()
        .unwrap();
    assert!(status.success(), "openssl made the certificates");
    tls
}

#[test]
fn tls_with_certificates_and_auth_is_what_the_intake_asks_and_swaks_and_smtplib_give() {
    let ws = workspace();
    let dir = ws.path();
    let tls = certificates(dir);
    let port = free_port();
    let t = tls.display();
    let secured = format!(
        "allow = [\"127.0.0.0/8\"]\nrequire_tls = true\n\n[intake.tls]\n\
         certificate = \"{t}/server.pem\"\nkey = \"{t}/server.key\"\nclient_ca = \"{t}/ca.pem\"\n\n\
         [intake.auth]\nusername = \"telemessage\"\npassword = {{ file = \"{t}/password\" }}"
    );
    std::fs::write(tls.join("password"), "correct horse\n").unwrap();
    smtp_config(dir, port, &[("allow = [\"127.0.0.0/8\"]", &secured)]);
    let running = daemon(dir, port);
    let p = port.to_string();
    let (ca, cert, key) = (
        format!("{t}/ca.pem"),
        format!("{t}/client.pem"),
        format!("{t}/client.key"),
    );

    // In the clear: STARTTLS offered, AUTH not, MAIL refused until STARTTLS.
    let answer = raw(
        port,
        b"EHLO s.test\r\nAUTH LOGIN\r\nMAIL FROM:<a@b.example>\r\nQUIT\r\n",
    );
    assert!(
        answer.contains("250 STARTTLS") && !answer.contains("AUTH PLAIN"),
        "{answer}"
    );
    assert!(
        answer.contains("538 5.7.11 encryption required"),
        "{answer}"
    );
    assert!(
        answer.contains("530 5.7.0 must issue a STARTTLS"),
        "{answer}"
    );

    // swaks: STARTTLS with the client certificate, then AUTH PLAIN.
    std::fs::write(dir.join("swaks.eml"), message("TM-SWAKS", "through swaks")).unwrap();
    let swaks = |extra: &[&str]| {
        Command::new("swaks")
            .args([
                "--server",
                "127.0.0.1",
                "--port",
                &p,
                "--to",
                RCPT,
                "--from",
                "archive@telemessage.example",
            ])
            .args(["--tls", "--tls-cert", &cert, "--tls-key", &key, "--data"])
            .arg(dir.join("swaks.eml"))
            .args(extra)
            .output()
            .expect("swaks runs (Debian package swaks)")
    };
    let out = swaks(&[
        "--auth",
        "PLAIN",
        "--auth-user",
        "telemessage",
        "--auth-password",
        "correct horse",
    ]);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("<~  250 2.0.0 Ok: kept"), "{said}");
    let out = swaks(&[
        "--auth",
        "LOGIN",
        "--auth-user",
        "telemessage",
        "--auth-password",
        "wrong",
    ]);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        !out.status.success() && said.contains("535 5.7.8"),
        "{said}"
    );

    // smtplib: the same with a certificate; without one, the handshake is refused.
    std::fs::write(dir.join("py.eml"), message("TM-PYTHON", "through smtplib")).unwrap();
    let py = dir.join("py.eml");
    let sent = python(&[
        "send",
        &p,
        RCPT,
        py.to_str().unwrap(),
        "--starttls",
        &ca,
        "--cert",
        &cert,
        &key,
        "--auth",
        "telemessage",
        "correct horse",
    ]);
    assert_eq!(sent[0]["code"], 250, "{sent:?}");
    let refused = python(&[
        "send",
        &p,
        RCPT,
        py.to_str().unwrap(),
        "--starttls",
        &ca,
        "--auth",
        "telemessage",
        "correct horse",
    ]);
    assert!(
        refused[0].get("connect").is_some(),
        "no client certificate, no session: {refused:?}"
    );

    // The simulator, TeleMessage's strongest level: threaded, journal-wrapped.
    let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
    let options = comms_archiver_testkit::smtp::SendOptions {
        threaded: true,
        journal: true,
        starttls_ca: Some(tls.join("ca.pem")),
        client_identity: Some((tls.join("client.pem"), tls.join("client.key"))),
        auth: Some(("telemessage".into(), "correct horse".into())),
        connections: 1,
    };
    let day_messages =
        comms_archiver_testkit::smtp::day_messages(&dir.join("fixtures/telemessage-zip"), day)
            .unwrap();
    let threads = comms_archiver_testkit::smtp::prepared(day_messages, day, &options);
    let count = threads.len();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sent = rt
        .block_on(comms_archiver_testkit::smtp::send(
            &format!("127.0.0.1:{port}"),
            RCPT,
            threads,
            &options,
        ))
        .unwrap();
    assert_eq!(sent, count);
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
        log.available_from_source as usize,
        2 + count,
        "swaks, smtplib and the threads"
    );
    assert_eq!((log.imported as usize, log.failed), (2 + count, 0));
    // Each threaded email is filed unwrapped: the original, not the journal envelope.
    let mail = dir.join("var/mail");
    let threaded: Vec<Vec<u8>> = messages(&mail, "alice.smith@contoso.com", FOLDER)
        .iter()
        .chain(messages(&mail, "bob.jones@contoso.com", FOLDER).iter())
        .map(|p| std::fs::read(p).unwrap())
        .filter(|m| {
            header(m, "X-TELEMESSAGE-ArchiveMessageID").is_some_and(|id| id.starts_with("THREAD-"))
        })
        .collect();
    assert!(!threaded.is_empty());
    for m in &threaded {
        assert!(header(m, "X-MS-Journal-Report").is_none(), "unwrapped");
        assert!(
            header(m, "X-Comms-Archiver-Conversation").is_some(),
            "in the conversation's thread"
        );
        assert!(header(m, "References").is_some_and(|r| r.starts_with("<conv-")));
    }
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

//! The SMTP intake from outside: the daemon (`run`) listening on a loopback port, spoken to
//! by clients that are not ours (Python's smtplib, raw sockets from Python, swaks), killed
//! and stopped in the middle of things; then the day's run, which must import every
//! acknowledged message exactly once.

//!
//! `delivery.rs`: the demo day against the ZIP drop; `faults.rs`: kills, stops, a full disk and
//! clients that misbehave; `security.rs`: TLS levels, AUTH, `check`; `days.rs`: which day a
//! message is read in.

mod days;
mod delivery;
mod faults;
mod security;

use crate::support::*;
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const RCPT: &str = "o2-archive@archive.contoso.com";

/// The workspace's config/smtp.toml: config/demo-smtp.toml on `port`, with `edits`.
pub fn smtp_config(dir: &Path, port: u16, edits: &[(&str, &str)]) {
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
pub fn daemon(dir: &Path, port: u16) -> Child {
    daemon_with(dir, port, &[])
}

/// `run` in `dir` with `envs` set, once its intake accepts connections on `port`; its log
/// is `daemon-<n>.log`, one per start.
pub fn daemon_with(dir: &Path, port: u16, envs: &[(&str, &str)]) -> Child {
    static STARTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let log = std::fs::File::create(dir.join(format!("daemon-{n}.log"))).unwrap();
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
        .envs(envs.iter().copied())
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

pub fn client_script() -> PathBuf {
    repo().join("tests/integration/smtp_client.py")
}

/// Runs the Python client; one JSON reply per message.
pub fn python(args: &[&str]) -> Vec<serde_json::Value> {
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
pub fn raw(port: u16, bytes: &[u8]) -> String {
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
pub fn demo_emls(dir: &Path) -> Vec<PathBuf> {
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

pub fn once(dir: &Path) -> std::process::Output {
    cli(
        dir,
        &["once", "--config", "config/smtp.toml", "--date", DEMO_DATE],
    )
}

pub fn o2_log(dir: &Path) -> comms_archiver::report::StatusLog {
    let path = dir.join("var/stage/reports/o2/2026-11-20.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Every message of every mailbox's folder, by mailbox, sorted.
pub fn mailboxes(mail: &Path) -> Vec<(String, Vec<Vec<u8>>)> {
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
pub fn body(raw: &[u8]) -> &[u8] {
    let at = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    &raw[at + 4..]
}

/// A TeleMessage message of the demo day from Alice's number, with its own id.
pub fn message(id: &str, text: &str) -> String {
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
pub fn reply(stream: &mut TcpStream) -> String {
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
pub fn in_data(port: u16) -> TcpStream {
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

/// A CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl.
pub fn certificates(dir: &Path) -> PathBuf {
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

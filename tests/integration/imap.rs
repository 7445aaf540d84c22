//! Importing over IMAP into a real Dovecot, read back by an independent client.

use crate::dovecot::{Dovecot, PASSWORD};
use crate::support::*;
use comms_archiver::http_server::{self, Request, Response};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

pub(crate) fn configure(dir: &Path, port: u16, edit: impl Fn(String) -> String) {
    let text = std::fs::read_to_string(dir.join("config/demo-imap.toml")).unwrap();
    // The walkthrough's own var/ subtree; each test has a workspace of its own.
    let text = patched(
        &text,
        &[
            ("port = 10143", &format!("port = {port}")),
            ("\"var/imap/stage\"", "\"var/stage\""),
        ],
    );
    std::fs::write(dir.join("config/imap.toml"), edit(text)).unwrap();
}

/// `once` on the demo day into the Dovecot configured by [`configure`], with JSON logs.
pub(crate) fn once_command(dir: &Path) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_comms-archiver"));
    command
        .args([
            "--log-format",
            "json",
            "once",
            "--config",
            "config/imap.toml",
        ])
        .args(["--date", DEMO_DATE])
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env("COMMS_ARCHIVER_IMAP_PASSWORD", PASSWORD);
    command
}

pub(crate) fn once(dir: &Path) -> Output {
    once_command(dir).output().unwrap()
}

/// Runs `once` from an async test (off the runtime's threads) and expects it to succeed.
pub(crate) async fn once_succeeds(dir: &Path) -> Output {
    let dir = dir.to_path_buf();
    succeeds(move || once(&dir)).await
}

/// (mailbox, folder) -> sorted item ids, from the Maildir demo run.
pub(crate) fn maildir_day() -> BTreeMap<(String, String), Vec<String>> {
    let ws = workspace();
    demo_day(ws.path(), &[]);
    let mut day = BTreeMap::new();
    for mailbox in MAILBOXES {
        for entry in std::fs::read_dir(ws.path().join("var/mail").join(mailbox)).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(folder) = name.strip_prefix(".INBOX.") else {
                continue;
            };
            let mut ids: Vec<String> = messages(&ws.path().join("var/mail"), mailbox, folder)
                .iter()
                .map(|p| header(&std::fs::read(p).unwrap(), "X-Comms-Archiver-Item-Id").unwrap())
                .collect();
            ids.sort();
            day.insert((mailbox.to_string(), folder.to_string()), ids);
        }
    }
    day
}

/// The same view of what Dovecot holds, checking every message is read, dated with its
/// item's time, and present once.
pub(crate) fn imap_day(read: &Value) -> BTreeMap<(String, String), Vec<String>> {
    let mut day = BTreeMap::new();
    for (mailbox, folders) in read.as_object().unwrap() {
        for (folder, list) in folders.as_object().unwrap() {
            let list = list.as_array().unwrap();
            let mut ids: Vec<String> = Vec::new();
            let mut message_ids = std::collections::HashSet::new();
            for m in list {
                assert_eq!(m["seen"], true, "{mailbox}/{folder}: {m}");
                assert_eq!(
                    m["internaldate"], m["date"],
                    "{mailbox}/{folder}: INTERNALDATE is the item's time: {m}"
                );
                assert!(
                    message_ids.insert(m["message_id"].as_str().unwrap().to_string()),
                    "{mailbox}/{folder}: a message is there twice: {m}"
                );
                ids.push(m["item_id"].as_str().unwrap().to_string());
            }
            ids.sort();
            day.insert((mailbox.clone(), folder.clone()), ids);
        }
    }
    day
}

#[test]
fn the_demo_day_over_imap_is_the_demo_day_in_the_maildir() {
    let ws = workspace();
    let dovecot = Dovecot::start(ws.path(), None);
    configure(ws.path(), dovecot.port, |t| t);
    let out = once(ws.path());
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}\nDovecot's log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        dovecot.log()
    );
    assert_eq!(imported_events(&out.stderr), 37);
    let expected = maildir_day();
    assert_eq!(imap_day(&dovecot.read_back(MAILBOXES)), expected);
    // Exact folder names under the Inbox.
    let folders: std::collections::BTreeSet<String> =
        expected.keys().map(|(_, f)| f.clone()).collect();
    assert_eq!(
        folders.into_iter().collect::<Vec<_>>(),
        [
            "CellTrust",
            "CellTrust SL2",
            "O2 SMS and Voice Network Archiver",
            "WhatsApp Archiver"
        ]
    );

    let again = once(ws.path());
    assert_eq!(again.status.code(), Some(3));
    assert_eq!(
        imported_events(&again.stderr),
        0,
        "a second run adds nothing"
    );
    assert_eq!(imap_day(&dovecot.read_back(MAILBOXES)), expected);
}

#[test]
fn killing_the_daemon_mid_import_then_rerunning_leaves_every_item_once() {
    let ws = workspace();
    let dovecot = Dovecot::start(ws.path(), None);
    configure(ws.path(), dovecot.port, |t| t);
    let mut child = once_command(ws.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (seen, _) = kill_after_imports(&mut child, 12);
    assert_eq!(seen, 12);
    let out = once(ws.path());
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(imap_day(&dovecot.read_back(MAILBOXES)), maildir_day());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xoauth2_with_one_app_token_for_every_mailbox() {
    let ws = workspace();
    // The identity platform: a client-credentials token endpoint, and token info for Dovecot.
    let issued = Arc::new(AtomicUsize::new(0));
    let counter = issued.clone();
    let handler = move |request: Request| {
        let counter = counter.clone();
        async move {
            match (request.method.as_str(), request.path.as_str()) {
                ("POST", "/tenant/oauth2/v2.0/token") => {
                    let form: std::collections::HashMap<String, String> =
                        url::form_urlencoded::parse(&request.body)
                            .into_owned()
                            .collect();
                    let good = form.get("grant_type").map(String::as_str)
                        == Some("client_credentials")
                        && form.get("client_secret").map(String::as_str) == Some("app-secret")
                        && form.get("scope").map(String::as_str)
                            == Some("https://outlook.office365.com/.default");
                    if !good {
                        return Response::text(401, "invalid_client\n");
                    }
                    let n = counter.fetch_add(1, Ordering::SeqCst);
                    Response::json(
                        200,
                        &serde_json::json!({"access_token": format!("app-token-{n}"), "expires_in": 3599}),
                    )
                }
                ("GET", "/tokeninfo") => match request.query.get("access_token") {
                    Some(t) if t.starts_with("app-token-") => {
                        Response::json(200, &serde_json::json!({"username": "app@contoso.com"}))
                    }
                    _ => Response::text(401, "invalid_token\n"),
                },
                _ => Response::text(404, "\n"),
            }
        }
    };
    let listener = http_server::bind("127.0.0.1:0".parse().unwrap(), "identity")
        .await
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(http_server::serve(listener, Arc::new(handler)));

    let dir = ws.path().to_path_buf();
    let dovecot = Dovecot::start(
        &dir,
        Some(&format!("http://127.0.0.1:{port}/tokeninfo?access_token=")),
    );
    std::fs::write(dir.join("app-secret"), "app-secret").unwrap();
    let d = dir.display().to_string();
    configure(&dir, dovecot.port, |t| {
        t.replace(
            "auth = \"login\"\nusername = \"{mailbox}\"\npassword = { env = \"COMMS_ARCHIVER_IMAP_PASSWORD\" }",
            &format!(
                "auth = \"xoauth2\"\ntenant_id = \"tenant\"\nclient_id = \"archiver-app\"\n\
                 client_secret = {{ file = \"{d}/app-secret\" }}\n\
                 token_url = \"http://127.0.0.1:{port}/tenant/oauth2/v2.0/token\""
            ),
        )
    });
    once_succeeds(&dir).await;
    assert_eq!(
        issued.load(Ordering::SeqCst),
        1,
        "one token, cached, for every mailbox"
    );
    let read = tokio::task::spawn_blocking(move || dovecot.read_back(MAILBOXES))
        .await
        .unwrap();
    let expected = tokio::task::spawn_blocking(maildir_day).await.unwrap();
    assert_eq!(imap_day(&read), expected);
    server.abort();
}

/// How the proxy breaks an APPEND.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Break {
    /// The connection is lost halfway through the command (the server never gets it whole).
    MidMessage,
    /// Lost after the server stored the message(s), before its OK reaches the client: of an
    /// APPEND of one message, or of several in one APPEND (MULTIAPPEND, sent as LITERAL+).
    StoredOne,
    StoredMany,
}

/// A TCP proxy in front of Dovecot that breaks chosen APPENDs, counted over all connections.
/// A break due goes to the first APPEND from then on that it fits and whose mailbox folder
/// was not broken before (so a retry passes).
async fn breaking_proxy(
    upstream: u16,
    plan: &'static [(usize, Break)],
) -> (u16, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let appends = Arc::new(AtomicUsize::new(0));
    // Breaks due, and the mailbox folders (LOGIN name, folder) broken already.
    let pending = Arc::new(std::sync::Mutex::new(
        std::collections::VecDeque::<Break>::new(),
    ));
    let broken = Arc::new(std::sync::Mutex::new(
        std::collections::HashSet::<String>::new(),
    ));
    let task = tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            let (appends, pending, broken) = (appends.clone(), pending.clone(), broken.clone());
            tokio::spawn(async move {
                let server = tokio::net::TcpStream::connect(("127.0.0.1", upstream))
                    .await
                    .unwrap();
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                // The APPEND whose answer must not arrive, if any, on this connection.
                let (cut_tx, mut cut_rx) = tokio::sync::watch::channel(false);
                let (pending, broken) = (pending.clone(), broken.clone());
                let upward =
                    async move {
                        let mut buf = vec![0u8; 64 * 1024];
                        let mut cut_mid = false;
                        let mut user: Option<String> = None;
                        loop {
                            let n = match cr.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            let chunk = &buf[..n];
                            if cut_mid {
                                let _ = sw.write_all(&chunk[..n / 2]).await;
                                return; // drops both halves of this side: the connection breaks
                            }
                            if let Some(at) = command(chunk, b"LOGIN ") {
                                user = chunk[at..]
                                    .split(|b| *b == b' ')
                                    .next()
                                    .map(|u| String::from_utf8_lossy(u).into_owned());
                            }
                            if let Some(at) = command(chunk, b"APPEND ") {
                                let number = appends.fetch_add(1, Ordering::SeqCst) + 1;
                                let cut = {
                                    let mut pending = pending.lock().unwrap();
                                    if let Some((_, kind)) = plan.iter().find(|(n, _)| *n == number)
                                    {
                                        pending.push_back(*kind);
                                    }
                                    // LITERAL+ ("{n+}") is how several messages go in one APPEND.
                                    let many = find(chunk, b"+}\r\n").is_some();
                                    let fits = |kind: &Break| match kind {
                                        Break::MidMessage => true,
                                        Break::StoredOne => !many,
                                        Break::StoredMany => many,
                                    };
                                    let folder = chunk[at..].split(|b| *b == b' ').next();
                                    let pair = user.clone().zip(folder).map(|(u, f)| {
                                        format!("{u} {}", String::from_utf8_lossy(f))
                                    });
                                    let mut broken = broken.lock().unwrap();
                                    match pair {
                                        Some(pair) if !broken.contains(&pair) => {
                                            let due = pending.iter().position(fits);
                                            let cut = due.and_then(|i| pending.remove(i));
                                            if cut.is_some() {
                                                broken.insert(pair);
                                            }
                                            cut
                                        }
                                        _ => None,
                                    }
                                };

                                eprintln!(
                                "proxy: APPEND #{number} of {:?} ({} message(s)): break {cut:?}",
                                user,
                                if find(chunk, b"+}\r\n").is_some() { "several" } else { "one" }
                            );
                                if cut == Some(Break::MidMessage) {
                                    let line_end = find(&chunk[at..], b"\r\n").map(|e| at + e + 2);
                                    match line_end {
                                        Some(end) if end < n => {
                                            let _ =
                                                sw.write_all(&chunk[..end + (n - end) / 2]).await;
                                            return;
                                        }
                                        _ => cut_mid = true,
                                    }
                                } else if cut.is_some() {
                                    let _ = cut_tx.send(true);
                                }
                            }
                            if sw.write_all(chunk).await.is_err() {
                                return;
                            }
                        }
                    };
                let downward = async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match sr.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        if *cut_rx.borrow_and_update() && find(&buf[..n], b"APPENDUID").is_some() {
                            return; // stored, but the client never hears of it
                        }
                        if cw.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                };
                // Either direction ending ends the connection.
                tokio::select! {
                    _ = upward => {}
                    _ = downward => {}
                }
            });
        }
    });
    (port, task)
}

/// Where the arguments of the IMAP command `name` start in `chunk`: the client writes a tag
/// and its command together or apart, so the name starts the chunk or follows a space.
fn command(chunk: &[u8], name: &[u8]) -> Option<usize> {
    let at = match chunk.starts_with(name) {
        true => 0,
        false => find(chunk, &[b" ", name].concat())? + 1,
    };
    Some(at + name.len())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dovecot_dropping_the_connection_mid_append_loses_and_duplicates_nothing() {
    let ws = workspace();
    let dir = ws.path().to_path_buf();
    let dovecot = tokio::task::spawn_blocking(move || Dovecot::start(&dir, None))
        .await
        .unwrap();
    // Dovecot takes a mailbox's copies for a connector in one APPEND (MULTIAPPEND), 14 of
    // them for the day: one of several messages and one of a single message break after
    // Dovecot stored them, and two break mid-message. All are due from the first APPENDs
    // on, and go to the first that fit, however the mailboxes' APPENDs interleave.
    let plan = &[
        (1, Break::StoredMany),
        (2, Break::StoredOne),
        (3, Break::MidMessage),
        (4, Break::MidMessage),
    ];
    let (port, proxy) = breaking_proxy(dovecot.port, plan).await;
    configure(ws.path(), port, |t| t);
    let out = once_succeeds(ws.path()).await;
    assert_eq!(imported_events(&out.stderr), 37);
    let expected = tokio::task::spawn_blocking(maildir_day).await.unwrap();
    let read = tokio::task::spawn_blocking(move || {
        let read = dovecot.read_back(MAILBOXES);
        drop(dovecot);
        read
    })
    .await
    .unwrap();
    assert_eq!(
        imap_day(&read),
        expected,
        "every message once, in its folder"
    );

    // The status logs say what happened.
    let logs = demo_logs(ws.path());
    let incidents: Vec<_> = logs.values().flat_map(|l| l.incidents.clone()).collect();
    let count = |kind: &str| -> u64 {
        incidents
            .iter()
            .filter(|i| i.side == "mailbox" && i.kind.starts_with(kind))
            .map(|i| i.count)
            .sum()
    };
    assert_eq!(count("IMAP connection lost"), 4, "{incidents:?}");
    // The retry of an APPEND whose answer was lost finds every message of it stored (none
    // is appended twice: the day read back above holds each once).
    assert!(
        count("message stored before the connection broke") >= 3,
        "the stored messages were found, not appended again: {incidents:?}"
    );
    assert!(logs
        .values()
        .all(|l| l.complete && l.failed == logs[&l.connector].failed));
    proxy.abort();
}

/// Runs the demo day over IMAP with one connection at work and `idle` kept between copies;
/// returns Dovecot's count of logins and of logouts once the run is over.
async fn demo_day_logins(idle: usize) -> (usize, usize) {
    let ws = workspace();
    let dir = ws.path().to_path_buf();
    let dovecot = tokio::task::spawn_blocking(move || Dovecot::start(&dir, None))
        .await
        .unwrap();
    configure(ws.path(), dovecot.port, |t| {
        t.replace(
            "password = { env = \"COMMS_ARCHIVER_IMAP_PASSWORD\" }",
            &format!(
                "password = {{ env = \"COMMS_ARCHIVER_IMAP_PASSWORD\" }}\nmax_connections = 1\n\
                 idle_connections = {idle}"
            ),
        )
    });
    let out = once_succeeds(ws.path()).await;
    assert_eq!(imported_events(&out.stderr), 37);
    // Dovecot logs a logout when its imap process has finished with it.
    let count = |log: &str, what: &str| log.lines().filter(|l| l.contains(what)).count();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let log = dovecot.log();
        let (logins, logouts) = (count(&log, "Login: user=<"), count(&log, "Logged out"));
        if logins == logouts || std::time::Instant::now() > deadline {
            return (logins, logouts);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_mailbox_logs_in_once_while_its_connection_is_kept() {
    // Six mailboxes receive the day's 37 copies: kept connections serve every copy after a
    // mailbox's first, and are logged out when the run ends.
    assert_eq!(demo_day_logins(32).await, (6, 6));
    // Kept for none, each mailbox logs in anew for each connector's copies, which go in one
    // APPEND (Dovecot takes MULTIAPPEND).
    let pairs = tokio::task::spawn_blocking(maildir_day)
        .await
        .unwrap()
        .len();
    assert!(pairs > 6 && pairs < 37, "{pairs} mailbox-folder pairs");
    assert_eq!(demo_day_logins(0).await, (pairs, pairs));
}

/// `check --connect` signs in to the IMAP server as a mapped mailbox: OK with the right
/// password, a FAIL that names the server and what to check with a wrong one (exit 2).
#[test]
fn check_connect_signs_in_to_the_imap_server() {
    let ws = workspace();
    let dovecot = Dovecot::start(ws.path(), None);
    configure(ws.path(), dovecot.port, |t| t);
    let check = |password: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_comms-archiver"))
            .args(["check", "--connect", "--config", "config/imap.toml"])
            .current_dir(ws.path())
            .env_remove("RUST_LOG")
            .env("COMMS_ARCHIVER_IMAP_PASSWORD", password)
            .output()
            .unwrap()
    };
    let out = check(PASSWORD);
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(0), "{said}");
    let server = format!("IMAP 127.0.0.1:{}", dovecot.port);
    assert!(
        said.contains(&format!("OK    mailbox: {server}: signed in for ")),
        "{said}"
    );

    let out = check("not the password");
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(said.contains(&format!("FAIL  mailbox: {server}")), "{said}");
    assert!(said.contains("check the credentials"), "{said}");
    assert!(
        !said.contains("not the password"),
        "the password is never shown: {said}"
    );
}

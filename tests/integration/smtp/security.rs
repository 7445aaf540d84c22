//! TeleMessage's security levels (plain, TLS, TLS with certificates), AUTH, and what `check`
//! says of the intake.

use super::*;
use crate::support::*;
use std::process::Command;

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
fn check_says_whether_the_intake_can_listen_and_how_it_is_secured() {
    let ws = workspace();
    let dir = ws.path();
    let port = free_port();
    smtp_config(dir, port, &[]);
    let check = || cli(dir, &["check", "--config", "config/smtp.toml"]);
    let out = check();
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(
        said.contains("OK    intake: plain SMTP (no STARTTLS), 1 recipient(s) routed"),
        "{said}"
    );
    assert!(
        said.contains(&format!("127.0.0.1:{port} is free to listen on")),
        "{said}"
    );
    let running = daemon(dir, port);
    let said = String::from_utf8_lossy(&check().stdout).into_owned();
    assert!(said.contains("the daemon is listening there"), "{said}");
    stop(running);
    // Another program holds the port.
    let squatter = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let out = check();
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(said.contains("is in use by another program"), "{said}");
    drop(squatter);
    // A TLS file that is not there is named.
    smtp_config(
        dir,
        port,
        &[(
            "allow = [\"127.0.0.0/8\"]",
            "allow = [\"127.0.0.0/8\"]\n[intake.tls]\ncertificate = \"/nonexistent/intake.pem\"\nkey = \"/nonexistent/intake.key\"",
        )],
    );
    let said = String::from_utf8_lossy(&check().stdout).into_owned();
    assert!(
        said.contains("FAIL  intake:") && said.contains("cannot read /nonexistent/intake.pem"),
        "{said}"
    );
}

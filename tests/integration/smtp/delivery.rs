//! The demo day sent over SMTP lands where the ZIP drop puts it.

use super::*;
use crate::support::*;

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

/// The intake on an Azure stage (Azurite): each message a committed blob, nothing kept on
/// the host; and two connectors behind one listener, Merge1's messages routed to its own.
#[test]
fn on_azure_the_host_keeps_nothing_and_each_recipient_reaches_its_connector() {
    use crate::azurite::{sas, Azurite};
    use comms_archiver::stage::Stage;
    let ws = workspace();
    let dir = ws.path();
    let azurite = Azurite::start(&dir.join("azurite"));
    let port = free_port();
    let azure = std::fs::read_to_string(dir.join("config/demo-azurite.toml")).unwrap();
    let stage_table = {
        let start = azure.find("[stage]").unwrap();
        let end = azure.find("[mailbox]").unwrap();
        azurite_stage(&azure[start..end], &azurite.endpoint(), 10)
    };
    smtp_config(
        dir,
        port,
        &[
            (
                "[stage]\nkind = \"local\"\npath = \"var/stage\"\n",
                stage_table.as_str(),
            ),
            (
                "recipients = [\"o2-archive@archive.contoso.com\"]",
                "recipients = [\"o2-archive@archive.contoso.com\"]\n\n\
                 [connectors.merge1]\npartner = \"merge1-celltrust\"\n\n\
                 [connectors.merge1.source]\ntransport = \"smtp\"\n\
                 recipients = [\"CellTrust@Archive.Contoso.com\"]",
            ),
        ],
    );
    let sas = sas();
    let env = [("COMMS_ARCHIVER_AZURITE_SAS", sas.as_str())];
    let running = daemon_with(dir, port, &env);
    let p = port.to_string();
    let o2: Vec<String> = demo_emls(dir)
        .iter()
        .map(|e| e.display().to_string())
        .collect();
    let o2: Vec<&str> = o2.iter().map(String::as_str).collect();
    let sent = python(&[&["send", &p, RCPT][..], &o2].concat());
    assert!(sent.iter().all(|r| r["code"] == 250), "{sent:?}");
    let merge1: Vec<String> = (1..=4)
        .map(|n| {
            dir.join(format!(
                "fixtures/merge1-celltrust/2026-11-20/merge1-000{n}.eml"
            ))
            .display()
            .to_string()
        })
        .collect();
    let merge1: Vec<&str> = merge1.iter().map(String::as_str).collect();
    let sent = python(&[&["send", &p, "celltrust@archive.contoso.com"][..], &merge1].concat());
    assert!(sent.iter().all(|r| r["code"] == 250), "{sent:?}");
    stop(running);
    assert!(
        !dir.join("var/stage").exists(),
        "nothing is kept on the host"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_comms-archiver"))
        .args(["once", "--config", "config/smtp.toml", "--date", DEMO_DATE])
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .envs(env)
        .output()
        .unwrap();
    // 3: the demo's Merge1 day has a participant that maps to no one (held, as in the drop).
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let stage = crate::azure::stage(&azurite);
    let blobs = rt.block_on(stage.list("intake/")).unwrap();
    let kept = |c: &str| {
        blobs
            .iter()
            .filter(|b| b.starts_with(&format!("intake/{c}/2026-11-20/messages/")))
            .count()
    };
    assert_eq!((kept("o2"), kept("merge1")), (3, 4), "{blobs:?}");
    let log = |c: &str| -> comms_archiver::report::StatusLog {
        let key = format!("reports/{c}/2026-11-20.json");
        serde_json::from_slice(&rt.block_on(stage.get(&key)).unwrap().unwrap()).unwrap()
    };
    let (o2, merge1) = (log("o2"), log("merge1"));
    assert_eq!(
        (o2.available_from_source, o2.imported, o2.failed),
        (3, 3, 0)
    );
    assert_eq!((merge1.available_from_source, merge1.failed), (4, 0));
    assert_eq!(
        (merge1.imported, merge1.held),
        (4, 1),
        "as the drop run has them"
    );
    assert!(o2.complete && merge1.complete);
    let celltrust = messages(
        &dir.join("var/mail"),
        "alice.smith@contoso.com",
        "CellTrust",
    );
    assert!(
        !celltrust.is_empty(),
        "Merge1's messages are in its own folder"
    );
}

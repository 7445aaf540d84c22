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

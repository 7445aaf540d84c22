//! The configuration as a whole: secrets, locations, defaults, overrides.

/// Every secret key, written as a plain value: the error names the file, the line and
/// the key, says how to reference a secret, and never holds the value.
#[test]
fn a_secret_written_inline_is_refused_without_repeating_it() {
    const VALUE: &str = "Hunter2-not-for-logs";
    let demo = include_str!("../../config/demo.toml");
    let stage = "[stage]\nkind = \"local\"\npath = \"var/stage\"\n";
    let mailbox = "[mailbox]\nkind = \"maildir\"\npath = \"var/mail\"\n";
    let azure = |line: &str| {
        format!(
            "[stage]\nkind = \"azure\"\naccount = \"a\"\ncontainer = \"c\"\n\
             auth = \"client-secret\"\nclient_id = \"i\"\ntenant_id = \"t\"\n{line}\n"
        )
    };
    let imap = |line: &str| {
        format!(
            "[mailbox]\nkind = \"imap\"\nhost = \"127.0.0.1\"\nsecurity = \"plain\"\n\
             allow_plaintext_loopback = true\nauth = \"login\"\nusername = \"{{mailbox}}\"\n{line}\n"
        )
    };
    let graph = format!(
        "[mailbox]\nkind = \"graph\"\ntenant_id = \"t\"\nclient_id = \"i\"\nclient_secret = \"{VALUE}\"\n"
    );
    let https = |line: &str| {
        format!(
            "[connectors.o2.source]\ntransport = \"https\"\nurl = \"https://partner.example/api\"\n\
             username = \"u\"\n{line}\n"
        )
    };
    let cases: Vec<(String, &str)> = vec![
        (
            azure(&format!("client_secret = \"{VALUE}\"")),
            "stage.client_secret",
        ),
        (
            azure(&format!("client_certificate = \"{VALUE}\"")),
            "stage.client_certificate",
        ),
        (azure(&format!("sas = \"{VALUE}\"")), "stage.sas"),
        (imap(&format!("password = \"{VALUE}\"")), "mailbox.password"),
        (
            imap(&format!("client_secret = \"{VALUE}\"")),
            "mailbox.client_secret",
        ),
        (imap("password = 12345678"), "mailbox.password"),
        (graph.clone(), "mailbox.client_secret"),
        (
            https(&format!("password = \"{VALUE}\"")),
            "connectors.o2.source.password",
        ),
        (
            https(&format!("client_secret = \"{VALUE}\"")),
            "connectors.o2.source.client_secret",
        ),
        (
            https(&format!("api_key = [\"{VALUE}\"]")),
            "connectors.o2.source.api_key",
        ),
    ];
    for (section, key) in cases {
        let mut text = demo.replace(stage, "").replace(mailbox, "");
        let https_source =
            "[connectors.o2.source]\ntransport = \"drop\"\npath = \"fixtures/telemessage-o2\"\n";
        if section.starts_with("[connectors.o2.source]") {
            text = text.replace(https_source, "");
            text.push_str(stage);
            text.push_str(mailbox);
        } else if section.starts_with("[stage]") {
            text.push_str(mailbox);
        } else {
            text.push_str(stage);
        }
        text.push('\n');
        text.push_str(&section);
        let e = Config::from_toml(Path::new("site.toml"), &text, &[])
            .expect_err(key)
            .to_string();
        let want_line = text
            .lines()
            .position(|l| l.contains(VALUE) || l == "password = 12345678")
            .unwrap()
            + 1;
        assert!(
            e.starts_with(&format!("site.toml line {want_line}, key `{key}`")),
            "{key}: {e}"
        );
        assert!(
            e.contains("{ env = \"VARIABLE\" }") && e.contains("{ file = "),
            "{e}"
        );
        assert!(!e.contains(VALUE) && !e.contains("12345678"), "{key}: {e}");
    }
    // Set from the environment: the variable is named, the value is not repeated.
    let text = demo.replace(mailbox, &imap("password = { env = \"P\" }"));
    let env = [(
        "COMMS_ARCHIVER__MAILBOX__PASSWORD".to_string(),
        VALUE.to_string(),
    )];
    let e = Config::from_toml(Path::new("site.toml"), &text, &env)
        .expect_err("a plain value from the environment")
        .to_string();
    assert!(
        e.contains("COMMS_ARCHIVER__MAILBOX__PASSWORD") && e.contains("{ env = "),
        "{e}"
    );
    assert!(!e.contains(VALUE), "{e}");
}

use super::*;
use crate::mailbox::MailboxConfig;
use crate::secret::SecretRef;
use chrono::NaiveTime;

const GOOD: &str = r#"
[mapping]
default_region = "GB"
domains = ["contoso.com"]

[stage]
kind = "local"
path = "var/stage"

[mailbox]
kind = "maildir"
path = "var/mail"

[connectors.o2]
partner = "telemessage-o2"
mapping_csv = "config/mapping-o2.csv"

[connectors.o2.source]
transport = "drop"
path = "fixtures/telemessage-o2"
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml(Path::new("test.toml"), text, &[])
}

#[test]
fn parses_with_defaults() {
    let c = parse(GOOD).unwrap();
    assert_eq!(c.archiver.max_item_bytes, 10_485_760);
    assert_eq!(
        c.schedule.wake_time,
        NaiveTime::from_hms_opt(4, 0, 0).unwrap()
    );
    assert_eq!(
        c.connectors["o2"].folder(),
        "O2 SMS and Voice Network Archiver"
    );
}

#[test]
fn unknown_key_names_line_and_key() {
    let text = GOOD.replace("[mailbox]\n", "[mailbox]\nbogus = 1\n");
    let e = parse(&text).unwrap_err();
    assert_eq!(e.line, Some(11), "{e}");
    assert_eq!(e.key.as_deref(), Some("mailbox.bogus"), "{e}");
    assert!(e.message.contains("unknown field `bogus`"), "{e}");
    assert!(e.to_string().starts_with("test.toml line 11"), "{e}");
}

#[test]
fn semantic_errors_are_located() {
    let text = GOOD.replace("default_region = \"GB\"", "default_region = \"XX\"");
    let e = parse(&text).unwrap_err();
    assert_eq!(e.line, Some(3));
    assert_eq!(e.key.as_deref(), Some("mapping.default_region"));

    let text = GOOD.replace(
        "partner = \"telemessage-o2\"",
        "partner = \"telemessage-o2\"\nfolder = \"A.B\"",
    );
    let e = parse(&text).unwrap_err();
    assert_eq!(e.key.as_deref(), Some("connectors.o2.folder"));
    assert_eq!(e.line, Some(16));
}

#[test]
fn hold_and_oversize_settings_are_checked() {
    let text = GOOD.replace(
        "domains = [\"contoso.com\"]",
        "domains = [\"contoso.com\"]\nunmapped_mailbox = \"nobody\"",
    );
    let e = parse(&text).unwrap_err();
    assert_eq!(e.key.as_deref(), Some("mapping.unmapped_mailbox"), "{e}");
    assert!(e.message.contains("not a mailbox address"), "{e}");
    let c = parse(&text.replace("\"nobody\"", "\"Archive@Contoso.com\"")).unwrap();
    assert_eq!(
        c.mapping.unmapped_mailbox.as_deref(),
        Some("Archive@Contoso.com")
    );

    let text = format!("[archiver]\noversize = \"drop-attachments\"\n{GOOD}");
    let c = parse(&text).unwrap();
    assert_eq!(
        c.archiver.oversize,
        crate::pipeline::Oversize::DropAttachments
    );
    let e = parse(&text.replace("drop-attachments", "truncate")).unwrap_err();
    assert_eq!(e.key.as_deref(), Some("archiver.oversize"), "{e}");
    assert!(e.message.contains("skip"), "{e}");
}

#[test]
fn imap_connection_bounds_are_checked() {
    let imap = "[mailbox]\nkind = \"imap\"\nhost = \"imap.contoso.com\"\nauth = \"login\"\n\
                password = { env = \"IMAP_PASSWORD\" }\n";
    let text = GOOD.replace("[mailbox]\nkind = \"maildir\"\npath = \"var/mail\"\n", imap);
    let c = parse(&text).unwrap();
    let MailboxConfig::Imap(settings) = &c.mailbox else {
        panic!("an IMAP mailbox")
    };
    assert_eq!(
        (settings.max_connections, settings.idle_connections),
        (8, 32)
    );

    let e = parse(&text.replace("auth =", "max_connections = 0\nauth =")).unwrap_err();
    assert_eq!(e.key.as_deref(), Some("mailbox.max_connections"), "{e}");
    assert!(e.message.contains("give 1 to 1000"), "{e}");
    let e = parse(&text.replace("auth =", "idle_connections = 200000\nauth =")).unwrap_err();
    assert_eq!(e.key.as_deref(), Some("mailbox.idle_connections"), "{e}");
}

#[test]
fn graph_upload_limit_defaults_to_exchanges_and_is_checked() {
    let graph = "[mailbox]\nkind = \"graph\"\ntenant_id = \"t\"\nclient_id = \"i\"\n\
                 client_secret = { env = \"GRAPH_SECRET\" }\n";
    let text = GOOD.replace(
        "[mailbox]\nkind = \"maildir\"\npath = \"var/mail\"\n",
        graph,
    );
    let c = parse(&text).unwrap();
    let MailboxConfig::Graph(settings) = &c.mailbox else {
        panic!("Graph mailboxes")
    };
    assert_eq!(settings.uploads(), crate::mailbox::graph::DEFAULT_UPLOADS);

    let lowered = text.replace("tenant_id", "upload_limit_mb = 100\ntenant_id");
    let MailboxConfig::Graph(settings) = parse(&lowered).unwrap().mailbox else {
        panic!("Graph mailboxes")
    };
    assert_eq!(settings.uploads().most, 100_000_000);
    for (line, key, hint) in [
        (
            "upload_limit_mb = 4",
            "mailbox.upload_limit_mb",
            "give 8 to",
        ),
        (
            "upload_window_secs = 0",
            "mailbox.upload_window_secs",
            "give 1 to",
        ),
    ] {
        let e = parse(&text.replace("tenant_id", &format!("{line}\ntenant_id"))).unwrap_err();
        assert_eq!(e.key.as_deref(), Some(key), "{e}");
        assert!(e.message.contains(hint), "{e}");
    }
}

#[test]
fn secrets_are_read_from_env_or_file_and_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pw");
    std::fs::write(&path, "s3cr3t-sentinel\n").unwrap();
    let from_file = SecretRef {
        env: None,
        file: Some(path),
    };
    let secret = from_file.resolve().unwrap();
    assert_eq!(secret.expose(), "s3cr3t-sentinel");
    assert!(!format!("{secret:?}").contains("s3cr3t"));

    let missing = SecretRef {
        env: Some("COMMS_ARCHIVER_TEST_UNSET_SECRET".into()),
        file: None,
    };
    let e = missing.resolve().unwrap_err();
    assert!(e.contains("COMMS_ARCHIVER_TEST_UNSET_SECRET"), "{e}");
    let both = SecretRef {
        env: Some("X".into()),
        file: Some("y".into()),
    };
    assert!(both.resolve().unwrap_err().contains("exactly one"));
}

#[test]
fn environment_overrides_win() {
    let env = vec![
        (
            "COMMS_ARCHIVER__SCHEDULE__WAKE_TIME".to_string(),
            "05:30".to_string(),
        ),
        (
            "COMMS_ARCHIVER__CONNECTORS__O2__FOLDER".to_string(),
            "Texts".to_string(),
        ),
    ];
    let c = Config::from_toml(Path::new("t.toml"), GOOD, &env).unwrap();
    assert_eq!(
        c.schedule.wake_time,
        NaiveTime::from_hms_opt(5, 30, 0).unwrap()
    );
    assert_eq!(c.connectors["o2"].folder(), "Texts");

    let bad = vec![(
        "COMMS_ARCHIVER__ARCHIVER__MAX_ITEM_BYTES".to_string(),
        "lots".to_string(),
    )];
    let e = Config::from_toml(Path::new("t.toml"), GOOD, &bad).unwrap_err();
    assert!(
        e.message
            .contains("COMMS_ARCHIVER__ARCHIVER__MAX_ITEM_BYTES"),
        "{e}"
    );
}

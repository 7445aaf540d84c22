//! Every partner adapter, from its export drop and over HTTPS against the partner simulator.

use crate::support::*;
use comms_archiver::config::Config;
use comms_archiver::pipeline::Archiver;
use comms_archiver::report::StatusLog;
use comms_archiver_testkit::simulator::{Simulator, SimulatorConfig};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

pub(crate) const SECRET: &str = "s3ntinel-secret-9f1c";

fn day() -> chrono::NaiveDate {
    chrono::NaiveDate::from_ymd_opt(2026, 11, 20).unwrap()
}

/// (mailbox, folder) -> kind -> count, read from the tracking headers of every message.
fn kinds(mail: &Path) -> BTreeMap<(String, String), BTreeMap<String, usize>> {
    let mut out: BTreeMap<(String, String), BTreeMap<String, usize>> = BTreeMap::new();
    for mailbox in std::fs::read_dir(mail).unwrap() {
        let mailbox = mailbox.unwrap();
        for folder in std::fs::read_dir(mailbox.path()).unwrap() {
            let folder = folder.unwrap();
            let name = folder.file_name().to_string_lossy().into_owned();
            let Some(folder_name) = name.strip_prefix(".INBOX.") else {
                continue;
            };
            for message in std::fs::read_dir(folder.path().join("cur")).unwrap() {
                let raw = std::fs::read(message.unwrap().path()).unwrap();
                let kind = header(&raw, "X-Comms-Archiver-Kind").unwrap();
                let key = (
                    mailbox.file_name().to_string_lossy().into_owned(),
                    folder_name.to_string(),
                );
                *out.entry(key).or_default().entry(kind).or_default() += 1;
            }
        }
    }
    out
}

/// A mailbox, a folder and the count of each kind expected there.
type Row = (&'static str, &'static str, &'static [(&'static str, usize)]);

fn expected_kinds() -> BTreeMap<(String, String), BTreeMap<String, usize>> {
    let rows: &[Row] = &[
        ("alice.smith@contoso.com", "CellTrust", &[("email", 2)]),
        (
            "alice.smith@contoso.com",
            "CellTrust SL2",
            &[("celltrust", 3)],
        ),
        (
            "alice.smith@contoso.com",
            FOLDER,
            &[("mms", 1), ("sms", 4), ("voice", 1)],
        ),
        (
            "alice.smith@contoso.com",
            "WhatsApp Archiver",
            &[("whatsapp", 6), ("whatsapp-call", 1)],
        ),
        ("bob.jones@contoso.com", "CellTrust", &[("email", 1)]),
        (
            "bob.jones@contoso.com",
            "CellTrust SL2",
            &[("celltrust", 3)],
        ),
        ("bob.jones@contoso.com", FOLDER, &[("sms", 4), ("voice", 1)]),
        (
            "bob.jones@contoso.com",
            "WhatsApp Archiver",
            &[("whatsapp", 2), ("whatsapp-call", 1)],
        ),
        ("carol.white@contoso.com", FOLDER, &[("sms", 1)]),
        ("dan.brown@contoso.com", FOLDER, &[("sms", 1)]),
        ("emma.clark@contoso.com", "CellTrust", &[("email", 1)]),
        (
            "emma.clark@contoso.com",
            FOLDER,
            &[("sms", 1), ("voice", 1)],
        ),
        (
            "emma.clark@contoso.com",
            "WhatsApp Archiver",
            &[("whatsapp", 1)],
        ),
        ("priya.patel@contoso.com", FOLDER, &[("sms", 1)]),
    ];
    rows.iter()
        .map(|(m, f, k)| {
            let kinds = k.iter().map(|(kind, n)| (kind.to_string(), *n)).collect();
            ((m.to_string(), f.to_string()), kinds)
        })
        .collect()
}

/// Every message file under a Maildir tree, by relative path, with its bytes.
fn tree(mail: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else if path.parent().unwrap().ends_with("cur") {
                out.insert(
                    path.strip_prefix(root).unwrap().to_path_buf(),
                    std::fs::read(&path).unwrap(),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(mail, mail, &mut out);
    out
}

#[test]
fn the_demo_day_files_every_partner_in_its_own_folder() {
    let ws = workspace();
    let dir = ws.path();
    demo_day(dir, &[]);
    assert_eq!(kinds(&dir.join("var/mail")), expected_kinds());

    let out = cli(
        dir,
        &[
            "report",
            "--config",
            "config/demo.toml",
            "--date",
            "2026-11-20",
            "--connector",
            "sl2",
            "--format",
            "json",
        ],
    );
    let log: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(log["excluded"], 2);
    let a2p = &log["exclusions"][0];
    assert_eq!(a2p["item_id"], "SL2-20261120-0005");
    assert_eq!(a2p["reason"], "a2p");
    assert_eq!(
        a2p["detail"],
        "application-to-person sms from 72345: only person-to-person items are archived"
    );
    assert_eq!(log["exclusions"][1]["reason"], "unit_not_enabled");
    assert_eq!(
        log["held_copies"][0]["source_user"],
        "temp.user@contoso-temp.example"
    );
}

/// A running simulator over the repository's fixtures, and a configuration pointing at it.
pub(crate) struct Partners {
    pub(crate) sim: Arc<Simulator>,
    pub(crate) port: u16,
    pub(crate) task: tokio::task::JoinHandle<()>,
}

impl Partners {
    pub(crate) async fn start(dir: &Path, tune: impl FnOnce(&mut SimulatorConfig)) -> Partners {
        let mut config = SimulatorConfig::new(dir.join("fixtures"));
        config.secret = SECRET.into();
        tune(&mut config);
        let sim = Simulator::new(config);
        let (addr, task) = sim.start("127.0.0.1:0".parse().unwrap()).await.unwrap();
        Partners {
            sim,
            port: addr.port(),
            task,
        }
    }

    /// config/demo-https.toml aimed at this simulator, with fast retries; `edit` may change
    /// the text.
    pub(crate) fn config(&self, dir: &Path, edit: impl Fn(String) -> String) -> Config {
        let d = dir.display();
        // The walkthrough's own var/ subtree; each test has a workspace of its own.
        let text = std::fs::read_to_string(dir.join("config/demo-https.toml"))
            .unwrap()
            .replace("\"var/https/", "\"var/")
            .replace("18080", &self.port.to_string())
            .replace(
                "allow_http_loopback = true",
                "allow_http_loopback = true\nretry_initial_ms = 5\nmax_retries = 4",
            )
            .replace("\"config/", &format!("\"{d}/config/"))
            .replace("\"var/", &format!("\"{d}/var/"))
            .replace(
                "{ env = \"COMMS_ARCHIVER_SIM_SECRET\" }",
                &format!("{{ file = \"{d}/secret\" }}"),
            );
        std::fs::write(dir.join("secret"), SECRET).unwrap();
        Config::from_toml(Path::new("demo-https.toml"), &edit(text), &[]).unwrap()
    }
}

impl Drop for Partners {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn drop_run() -> (tempfile::TempDir, BTreeMap<String, StatusLog>) {
    let ws = workspace();
    demo_day(ws.path(), &[]);
    let logs = demo_logs(ws.path());
    (ws, logs)
}

/// The same outcome: counts, failures and exclusions, except that over HTTPS a unit that is
/// not enabled is never asked for (the drop holds it and lists it as excluded).
fn assert_same_outcome(https: &BTreeMap<String, StatusLog>, drop: &BTreeMap<String, StatusLog>) {
    for (name, h) in https {
        let d = &drop[name];
        assert!(h.complete, "{name}: {h:?}");
        // Repeats the partner serves are skipped; everything else is the same.
        assert_eq!(h.imported, d.imported, "{name}");
        assert_eq!(
            h.available_for_import - h.skipped_duplicates,
            d.available_for_import - d.skipped_duplicates,
            "{name}"
        );
        assert_eq!(h.failures, d.failures, "{name}");
        assert_eq!(h.held_copies, d.held_copies, "{name}");
        let enabled = |log: &StatusLog| {
            log.exclusions
                .iter()
                .filter(|x| x.reason != "unit_not_enabled")
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(enabled(h), enabled(d), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_adapter_over_https_matches_its_export_drop() {
    let (drop_ws, drop_logs) = tokio::task::spawn_blocking(drop_run).await.unwrap();
    let ws = workspace();
    let partners = Partners::start(ws.path(), |_| {}).await;
    let logs = run_in_process(&partners.config(ws.path(), |t| t), day()).await;
    assert_same_outcome(&logs, &drop_logs);
    assert_eq!(logs["o2"].imported, 16);
    // Rendering is deterministic: the very same bytes land in the very same files.
    assert_eq!(
        tree(&ws.path().join("var/mail")),
        tree(&drop_ws.path().join("var/mail"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partner_faults_are_absorbed_and_the_day_is_complete() {
    let (drop_ws, drop_logs) = tokio::task::spawn_blocking(drop_run).await.unwrap();
    let expected = tree(&drop_ws.path().join("var/mail"));
    type Switch = fn(&comms_archiver_testkit::simulator::Faults);
    let cases: &[(&str, Switch)] = &[
        ("5xx", |f| f.fail_5xx.store(3, Ordering::SeqCst)),
        ("429 with Retry-After", |f| {
            f.rate_limit.store(2, Ordering::SeqCst);
            f.retry_after_secs.store(1, Ordering::SeqCst);
        }),
        ("truncated page", |f| {
            f.truncate_pages.store(2, Ordering::SeqCst)
        }),
        ("slow answers", |f| f.slow_ms.store(30, Ordering::SeqCst)),
        ("item repeated across pages", |f| {
            f.duplicate_across_pages.store(true, Ordering::SeqCst)
        }),
        ("token expires mid-run", |f| {
            f.token_ttl.store(3, Ordering::SeqCst)
        }),
    ];
    for (name, switch) in cases {
        let ws = workspace();
        let partners = Partners::start(ws.path(), |_| {}).await;
        switch(partners.sim.faults());
        // Small pages, so that paging, repeats and expiry happen within the day.
        let config = partners.config(ws.path(), |t| {
            t.replace(
                "retry_initial_ms = 5",
                "retry_initial_ms = 5\npage_size = 4",
            )
        });
        let logs = run_in_process(&config, day()).await;
        for (connector, log) in &logs {
            assert!(log.complete, "{name}: {connector} left open: {log:?}");
            assert!(log.adds_up(), "{name}: {connector}");
        }
        assert_same_outcome(&logs, &drop_logs);
        assert_eq!(
            tree(&ws.path().join("var/mail")),
            expected,
            "{name}: mailboxes differ"
        );
        if *name == "item repeated across pages" {
            let repeats: u64 = logs.values().map(|l| l.skipped_duplicates).sum();
            assert!(
                repeats > drop_logs["o2"].skipped_duplicates,
                "{name}: no repeat was served"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partner_that_stays_down_leaves_the_day_open_then_completes_once() {
    let (drop_ws, _) = tokio::task::spawn_blocking(drop_run).await.unwrap();
    let ws = workspace();
    let partners = Partners::start(ws.path(), |_| {}).await;
    let config = partners.config(ws.path(), |t| t);
    partners.sim.faults().down.store(true, Ordering::SeqCst);
    let logs = run_in_process(&config, day()).await;
    for (connector, log) in &logs {
        assert!(!log.complete, "{connector}");
        assert_eq!(log.errors[0].reason, "source_unavailable", "{connector}");
        assert!(
            log.errors[0]
                .detail
                .contains(&format!("connector {connector}:")),
            "{:?}",
            log.errors
        );
        assert!(
            log.errors[0]
                .detail
                .contains("still after 4 retries; the day stays open"),
            "{:?}",
            log.errors
        );
    }
    partners.sim.faults().down.store(false, Ordering::SeqCst);
    let logs = run_in_process(&config, day()).await;
    assert!(logs.values().all(|l| l.complete));
    assert_eq!(
        tree(&ws.path().join("var/mail")),
        tree(&drop_ws.path().join("var/mail"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ou_admin_cannot_read_other_units() {
    let ws = workspace();
    let partners = Partners::start(ws.path(), |c| {
        c.sl2_role = "ou_admin".into();
        c.sl2_unit = Some("Trading".into());
    })
    .await;
    let config = partners.config(ws.path(), |t| t);
    let logs = run_in_process(&config, day()).await;
    let sl2 = &logs["sl2"];
    assert!(!sl2.complete);
    assert_eq!(sl2.errors[0].reason, "access_denied");
    assert_eq!(
        sl2.errors[0].detail,
        "connector sl2: the SL2 account is an OU admin of 'Trading' and cannot read the domain \
         'contoso' itself; enable only 'Trading' on this connector, or sign in as a domain admin"
    );
    // Enabling only its own unit works.
    let config = partners.config(ws.path(), |t| {
        t.replace("enable_domain = true", "enable_domain = false")
    });
    let logs = run_in_process(&config, day()).await;
    assert!(logs["sl2"].complete, "{:?}", logs["sl2"]);
    assert_eq!(
        logs["sl2"].imported, 4,
        "alice's Trading items: SMS, call, and an MMS to bob (2 copies)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_not_retried_and_name_the_connector() {
    let ws = workspace();
    let partners = Partners::start(ws.path(), |c| c.secret = "another-secret".into()).await;
    let config = partners.config(ws.path(), |t| t);
    let logs = run_in_process(&config, day()).await;
    let o2 = &logs["o2"];
    assert_eq!(o2.errors[0].reason, "access_denied");
    assert!(
        o2.errors[0].detail.starts_with("connector o2: "),
        "{}",
        o2.errors[0].detail
    );
    assert!(
        o2.errors[0].detail.contains("(401)"),
        "{}",
        o2.errors[0].detail
    );
    // One login attempt per connector, not a retry storm.
    assert!(partners.sim.requests.load(Ordering::SeqCst) <= 4);
}

#[test]
fn telemessage_eml_zips_are_reconciled_before_import() {
    let ws = workspace();
    let dir = ws.path();
    let demo = std::fs::read_to_string(dir.join("config/demo.toml")).unwrap();
    let zipped = patched(
        &demo,
        &[(
            "transport = \"drop\"\npath = \"fixtures/telemessage-o2\"",
            "transport = \"zip-drop\"\npath = \"fixtures/telemessage-zip\"",
        )],
    );
    std::fs::write(dir.join("config/zip.toml"), &zipped).unwrap();
    let zip_day = |dir: &Path| {
        let args = ["once", "--config", "config/zip.toml", "--date", DEMO_DATE];
        cli(dir, &[&args[..], &["--connector", "o2"]].concat())
    };
    let out = zip_day(dir);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mail = dir.join("var/mail");
    assert_eq!(messages(&mail, "alice.smith@contoso.com", FOLDER).len(), 2);
    assert_eq!(messages(&mail, "bob.jones@contoso.com", FOLDER).len(), 1);
    let raw = std::fs::read(&messages(&mail, "bob.jones@contoso.com", FOLDER)[0]).unwrap();
    assert_eq!(
        header(&raw, "X-TELEMESSAGE-ArchiveMessageID").as_deref(),
        Some("TM-20261120-0003")
    );
    assert_eq!(
        header(&raw, "X-Comms-Archiver-Kind").as_deref(),
        Some("sms"),
        "what TeleMessage's MessageType says the message carries"
    );

    // A ZIP whose manifest does not match its contents: nothing imported, the day open.
    let ws = workspace();
    let dir = ws.path();
    std::fs::write(
        dir.join("config/zip.toml"),
        zipped.replace(
            "fixtures/telemessage-zip\"",
            "fixtures/telemessage-zip-mismatch\"",
        ),
    )
    .unwrap();
    let out = zip_day(dir);
    assert_eq!(out.status.code(), Some(1));
    let out = cli(
        dir,
        &[
            "report",
            "--config",
            "config/zip.toml",
            "--date",
            "2026-11-20",
            "--connector",
            "o2",
            "--format",
            "json",
        ],
    );
    let log: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(log["errors"][0]["reason"], "reconciliation");
    let detail = log["errors"][0]["detail"].as_str().unwrap();
    assert!(
        detail.ends_with("202611200000-TeleMessage_1_031500.zip: TeleMessage.mf says Count: 4, the ZIP holds 3 EML files"),
        "{detail}"
    );
    assert_eq!(log["available_from_source"], 0);
    assert!(!dir.join("var/mail").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_that_time_out_are_retried_then_leave_the_day_open() {
    comms_archiver::install_crypto_provider();
    let ws = workspace();
    let partners = Partners::start(ws.path(), |_| {}).await;
    partners.sim.faults().slow_ms.store(1500, Ordering::SeqCst);
    let config = partners.config(ws.path(), |t| {
        t.replace("max_retries = 4", "max_retries = 1\ntimeout_secs = 1")
    });
    let archiver = Archiver::from_config(&config).unwrap();
    let results = archiver.run_days(&[day()], Some("merge1")).await;
    let log = results[0].log.as_ref().unwrap();
    assert!(!log.complete);
    assert_eq!(log.errors[0].reason, "source_unavailable");
    assert!(
        log.errors[0]
            .detail
            .contains("timed out, still after 1 retries"),
        "{}",
        log.errors[0].detail
    );
}

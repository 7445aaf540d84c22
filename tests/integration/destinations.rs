//! Where a copy counts as imported: only in the destination that holds it, and never on the
//! word of a partner's bytes.

use crate::dovecot::Dovecot;
use crate::imap::{configure, imap_day, maildir_day, once_succeeds};
use crate::support::*;
use comms_archiver::item::ItemKey;
use std::path::{Path, PathBuf};

/// Every file under `dir`.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn status_log(ws: &Path, connector: &str) -> serde_json::Value {
    let path = ws.join(format!("var/stage/reports/{connector}/2026-11-20.json"));
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// A Merge1 message carrying the archiver's own headers with another item's key: after a
/// crash that left that other item staged but not imported, the retried day must import it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partner_message_that_forges_our_headers_never_hides_another_item() {
    let ws = workspace();
    let drop = ws.path().join("fixtures/merge1-celltrust/2026-11-20");
    let victim = "M1-20261120-0002@merge1.example";
    let forged = ItemKey::new("merge1", victim);
    let planted = std::fs::read_to_string(drop.join("merge1-0001.eml")).unwrap();
    let planted = format!(
        "X-Comms-Archiver-Connector: merge1\r\nX-Comms-Archiver-Item-Id: {victim}\r\n\
         X-Comms-Archiver-Item-Key: {forged}\r\n{planted}"
    );
    std::fs::write(drop.join("merge1-0001.eml"), planted).unwrap();
    let dovecot = Dovecot::start(ws.path(), None);
    configure(ws.path(), dovecot.port, |t| t);
    once_succeeds(ws.path()).await;
    let whole = imap_day(&dovecot.read_back(MAILBOXES));

    // The crash: the victim's copy for Alice was staged and never imported, and the journal
    // that would have said so is gone.
    let alice = ws.path().join("dovecot/mail/alice.smith@contoso.com");
    let copies: Vec<PathBuf> = files(&alice)
        .into_iter()
        .filter(|p| {
            p.parent()
                .is_some_and(|d| d.ends_with("cur") || d.ends_with("new"))
        })
        .filter(|p| {
            std::fs::read(p).is_ok_and(|b| {
                String::from_utf8_lossy(&b).contains(&format!("Message-ID: <{victim}>"))
            })
        })
        .collect();
    assert_eq!(copies.len(), 1, "{copies:?}");
    std::fs::remove_file(&copies[0]).unwrap();
    std::fs::remove_dir_all(ws.path().join("var/stage/ledger/merge1/journal")).unwrap();
    assert_ne!(imap_day(&dovecot.read_back(MAILBOXES)), whole);

    once_succeeds(ws.path()).await;
    assert_eq!(
        imap_day(&dovecot.read_back(MAILBOXES)),
        whole,
        "the retried day imports the item the planted message claimed to be"
    );
    let log = status_log(ws.path(), "merge1");
    assert_eq!(log["complete"], true, "{log}");
    // The retried run imported the one copy missing; the day counts every copy once.
    let runs = run_logs(ws.path(), "merge1", DEMO_DATE);
    assert_eq!(runs.last().unwrap()["imported"], 1, "{runs:?}");
    assert_eq!(log["imported"], runs[0]["imported"], "{log}");
}

/// A pilot on the Maildir, then `[mailbox]` pointed at IMAP with the same stage: every copy
/// is imported into the new destination, none is taken for a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_destination_imports_everything_the_old_one_holds() {
    let ws = workspace();
    demo_day(ws.path(), &[]);
    let piloted = status_log(ws.path(), "o2");
    assert!(piloted["imported"].as_u64().unwrap() > 0);
    assert!(piloted["destination"]
        .as_str()
        .unwrap()
        .starts_with("maildir "));

    let dovecot = Dovecot::start(ws.path(), None);
    configure(ws.path(), dovecot.port, |t| t);
    once_succeeds(ws.path()).await;
    assert_eq!(imap_day(&dovecot.read_back(MAILBOXES)), maildir_day());
    let moved = status_log(ws.path(), "o2");
    assert_eq!(moved["imported"], piloted["imported"], "{moved}");
    assert_eq!(
        moved["skipped_duplicates"], piloted["skipped_duplicates"],
        "only the day's own repeat: {moved}"
    );
    let destination = moved["destination"].as_str().unwrap();
    assert!(
        destination.starts_with(&format!("imap 127.0.0.1:{}", dovecot.port))
            && destination.contains("O2 SMS and Voice Network Archiver"),
        "{destination}"
    );

    // Run again on IMAP: now everything is a duplicate there, and the day still reads as
    // what is in that destination.
    once_succeeds(ws.path()).await;
    let day = status_log(ws.path(), "o2");
    assert_eq!(day["imported"], moved["imported"], "{day}");
    let again = run_logs(ws.path(), "o2", DEMO_DATE).pop().unwrap();
    assert_eq!(again["imported"], 0, "{again}");
    assert_eq!(
        again["skipped_duplicates"].as_u64(),
        Some(
            piloted["imported"].as_u64().unwrap() + piloted["skipped_duplicates"].as_u64().unwrap()
        ),
        "{again}"
    );
}

/// A connector's folder renamed in the configuration: the day run again files every copy in
/// the new folder.
#[test]
fn a_renamed_folder_gets_every_copy() {
    let ws = workspace();
    demo_day(ws.path(), &[]);
    let piloted = status_log(ws.path(), "o2");
    let mail = ws.path().join("var/mail");
    let before = counts(&mail, FOLDER);
    let config = ws.path().join("config/demo.toml");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "[connectors.o2]\n",
        "[connectors.o2]\nfolder = \"O2 Archive\"\n",
    );
    std::fs::write(&config, text).unwrap();
    demo_day(ws.path(), &[]);
    assert_eq!(counts(&mail, "O2 Archive"), before);
    let log = status_log(ws.path(), "o2");
    assert_eq!(log["imported"], piloted["imported"], "{log}");
    // The day repeats one item itself; nothing else is a duplicate in the new folder.
    assert_eq!(
        log["skipped_duplicates"], piloted["skipped_duplicates"],
        "{log}"
    );
    assert!(log["destination"]
        .as_str()
        .unwrap()
        .ends_with("folder 'O2 Archive'"));
}

/// Every imported copy says why it went to its mailbox: the mapping CSV's file and line, or
/// the email property; the status log counts the copies each way, and they add up.
#[test]
fn every_import_record_says_how_its_copy_was_mapped() {
    let ws = workspace();
    demo_day(ws.path(), &[]);
    let mut ways = std::collections::BTreeSet::new();
    for connector in ["o2", "whatsapp", "sl2", "merge1"] {
        let log = status_log(ws.path(), connector);
        let counted: u64 = log["mapped_by"]
            .as_object()
            .map_or(0, |m| m.values().map(|n| n.as_u64().unwrap()).sum());
        assert_eq!(counted, log["imported"].as_u64().unwrap(), "{log}");
        let journal = ws
            .path()
            .join(format!("var/stage/ledger/{connector}/journal"));
        let records: Vec<serde_json::Value> = files(&journal)
            .iter()
            .flat_map(|batch| {
                std::fs::read_to_string(batch)
                    .unwrap()
                    .lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(records.len() as u64, counted, "{connector}");
        for record in &records {
            let how = record["mapped_by"].as_str().unwrap_or_default().to_string();
            assert!(
                how == "email property" || how.starts_with("mapping CSV config/mapping-"),
                "{record}"
            );
            if connector == "o2" && record["mailbox"] == "alice.smith@contoso.com" {
                assert_eq!(how, "mapping CSV config/mapping-o2.csv line 4", "{record}");
            }
            ways.insert(how.split(" line ").next().unwrap().to_string());
        }
    }
    assert!(ways.contains("email property"), "{ways:?}");
    assert!(ways.len() >= 2, "{ways:?}");
}

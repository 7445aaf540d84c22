//! Nothing is dropped for good: copies that cannot be delivered yet are held in the stage,
//! re-driven once the cause is fixed, and moved from held to imported in the day's
//! reconciliation; a catch-all mailbox files them meanwhile; a copy over the size limit may
//! be imported without its largest files, each kept whole.

use crate::cli::n;
use crate::support::*;
use mail_parser::MimeHeaders;
use serde_json::Value;
use std::path::Path;

/// The demo's unmapped number (Trading Desk 3), and the mailbox the fixed CSV gives it.
const DESK_3: &str = "+447700900199";
const DESK_3_MAILBOX: &str = "desk3@contoso.com";

fn o2(dir: &Path, args: &[&str]) -> std::process::Output {
    let tail = ["--config", "config/demo.toml", "--connector", "o2"];
    cli(dir, &[args, &tail[..]].concat())
}

fn json(out: &std::process::Output) -> Value {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn fix_the_mapping(dir: &Path) {
    let csv = dir.join("config/mapping-o2.csv");
    let mut rows = std::fs::read_to_string(&csv).unwrap();
    rows.push_str(&format!("{DESK_3},{DESK_3_MAILBOX},,\n"));
    std::fs::write(&csv, rows).unwrap();
}

fn configure(dir: &Path, edits: &[(&str, &str)]) {
    let path = dir.join("config/demo.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, patched(&text, edits)).unwrap();
}

/// The item ids in a mailbox's folder of the demo tree.
fn items_in(dir: &Path, mailbox: &str) -> Vec<String> {
    messages(&dir.join("var/mail"), mailbox, FOLDER)
        .iter()
        .filter_map(|p| header(&std::fs::read(p).unwrap(), "X-Comms-Archiver-Item-Id"))
        .collect()
}

fn in_maildir(dir: &Path) -> u64 {
    counts(&dir.join("var/mail"), FOLDER)
        .iter()
        .map(|(_, n)| *n as u64)
        .sum()
}

#[test]
fn a_crashed_day_rerun_then_redriven_after_a_mapping_fix_counts_every_copy_once() {
    let clean_ws = workspace();
    demo_day(clean_ws.path(), &[]);
    let clean = &demo_logs(clean_ws.path())["o2"];

    let ws = workspace();
    let dir = ws.path();
    // The first run is killed after 6 imports; the re-run finishes the day.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_comms-archiver"))
        .args([
            "--log-format",
            "json",
            "once",
            "--config",
            "config/demo.toml",
        ])
        .args(["--date", DEMO_DATE, "--connector", "o2"])
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (seen, _) = kill_after_imports(&mut child, 6);
    assert_eq!(seen, 6);
    let rerun = o2(dir, &["once", "--date", DEMO_DATE]);
    assert_eq!(rerun.status.code(), Some(3), "complete, with copies held");
    let before = json(&o2(
        dir,
        &["report", "--date", DEMO_DATE, "--format", "json"],
    ));
    assert_eq!(n(&before, "held"), 2, "{before}");
    assert!(items_in(dir, DESK_3_MAILBOX).is_empty());

    // The admin maps Trading Desk 3; a re-drive delivers its held copy, and a second one
    // finds nothing more to deliver. The call over the size limit stays held: exit 3.
    fix_the_mapping(dir);
    for _ in 0..2 {
        let out = o2(dir, &["redrive", "--date", DEMO_DATE]);
        assert_eq!(
            out.status.code(),
            Some(3),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(items_in(dir, DESK_3_MAILBOX), ["O2-20261120-0010"]);

    // The runs: the re-run that read the delivery, then the two re-drives (the killed run
    // left no log, its imports are in the journal).
    let runs = json(&o2(
        dir,
        &["report", "--date", DEMO_DATE, "--runs", "--format", "json"],
    ));
    let runs = runs.as_array().unwrap();
    let kinds: Vec<&str> = runs
        .iter()
        .map(|r| r["run"]["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["delivery", "redrive", "redrive"]);
    assert_eq!(runs[1]["redriven"][0]["delivered"][0], DESK_3_MAILBOX);
    assert_eq!(
        n(&runs[2], "imported"),
        0,
        "the second re-drive imports nothing"
    );

    // The day as a whole: every copy imported once, nothing counted twice, the held copy
    // moved to imported, the re-drives in its history.
    let day = json(&o2(
        dir,
        &["report", "--date", DEMO_DATE, "--format", "json"],
    ));
    assert_eq!(n(&day, "imported"), clean.imported + 1, "{day}");
    assert_eq!(n(&day, "held"), 1, "{day}");
    assert_eq!(day["held_copies"][0]["item_id"], "O2-20261120-C003");
    assert_eq!(n(&day, "skipped_duplicates"), clean.skipped_duplicates);
    assert_eq!(n(&day, "available_for_import"), clean.available_for_import);
    assert_eq!(n(&day, "failed"), 0);
    assert_eq!(day["runs"].as_array().unwrap().len(), 3);
    assert_eq!(in_maildir(dir), n(&day, "imported"));
    // The item's way: held by the day's run, imported by the first re-drive.
    let trace = o2(dir, &["trace", "O2-20261120-0010", "--date", DEMO_DATE]);
    let trace = String::from_utf8(finished(trace).stdout).unwrap();
    let redrive_run = runs[1]["run"]["id"].as_str().unwrap();
    assert!(
        trace.contains(&format!("copy for {DESK_3_MAILBOX}")),
        "{trace}"
    );
    assert!(trace.contains(&format!("by run {redrive_run}")), "{trace}");
    assert!(
        trace.contains(&format!("held user_mapping for {DESK_3} (no mailbox)")),
        "{trace}"
    );
    assert!(trace.contains("re-drove its held copies"), "{trace}");
    let table = String::from_utf8(o2(dir, &["report", "--date", DEMO_DATE]).stdout).unwrap();
    assert!(table.contains("held                          1"), "{table}");
    // The unmapped user is still reported by the day's run, with the copies held for them.
    assert!(
        String::from_utf8(o2(dir, &["report", "--date", DEMO_DATE, "--runs"]).stdout)
            .unwrap()
            .contains(&format!("unmapped {DESK_3}: 1 copy held")),
    );
}

#[test]
fn a_catch_all_files_unmapped_copies_until_their_owner_is_mapped() {
    let ws = workspace();
    let dir = ws.path();
    configure(
        dir,
        &[(
            "domains = [\"contoso.com\"]",
            "domains = [\"contoso.com\"]\nunmapped_mailbox = \"archive-unmapped@contoso.com\"",
        )],
    );
    assert_eq!(
        o2(dir, &["once", "--date", DEMO_DATE]).status.code(),
        Some(3)
    );
    assert_eq!(
        items_in(dir, "archive-unmapped@contoso.com"),
        ["O2-20261120-0010"]
    );
    let day = json(&o2(
        dir,
        &["report", "--date", DEMO_DATE, "--format", "json"],
    ));
    let filed: Vec<&Value> = day["held_copies"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["filed_in"] == "archive-unmapped@contoso.com")
        .collect();
    assert_eq!(filed.len(), 1, "still held for its owner: {day}");
    assert_eq!(day["mapped_by"]["catch_all"], 1, "{day}");
    assert_eq!(
        n(&day, "held"),
        1,
        "only the call over the limit counts as held"
    );
    let (available, imported) = (n(&day, "available_for_import"), n(&day, "imported"));

    fix_the_mapping(dir);
    o2(dir, &["redrive", "--date", DEMO_DATE]);
    assert_eq!(items_in(dir, DESK_3_MAILBOX), ["O2-20261120-0010"]);
    let day = json(&o2(
        dir,
        &["report", "--date", DEMO_DATE, "--format", "json"],
    ));
    assert!(
        day["held_copies"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["item_id"] != "O2-20261120-0010"),
        "{day}"
    );
    // The owner's copy is one more copy of the day; the catch-all's stays where it is.
    assert_eq!(n(&day, "available_for_import"), available + 1);
    assert_eq!(n(&day, "imported"), imported + 1);
    assert_eq!(in_maildir(dir), n(&day, "imported"));
}

#[test]
fn an_oversize_copy_is_imported_without_its_recording_which_is_kept_whole() {
    let ws = workspace();
    let dir = ws.path();
    configure(
        dir,
        &[(
            "max_item_bytes = 10485760",
            "max_item_bytes = 10485760\noversize = \"drop-attachments\"",
        )],
    );
    o2(dir, &["once", "--date", DEMO_DATE]);
    let day = json(&o2(
        dir,
        &["report", "--date", DEMO_DATE, "--format", "json"],
    ));
    assert_eq!(n(&day, "partially_imported"), 1, "{day}");
    assert!(day["held_copies"]
        .as_array()
        .unwrap()
        .iter()
        .all(|h| h["item_id"] != "O2-20261120-C003"));
    let partial = &day["partial_imports"][0];
    assert_eq!(partial["item_id"], "O2-20261120-C003");
    assert_eq!(partial["mailbox"], "bob.jones@contoso.com");
    let file = &partial["left_out"][0];
    let kept = dir.join("var/stage").join(file["kept"].as_str().unwrap());
    let original = std::fs::read(&kept).unwrap();
    assert_eq!(original.len() as u64, file["bytes"].as_u64().unwrap());
    assert_eq!(
        comms_archiver::item::sha256_hex(&original),
        file["sha256"].as_str().unwrap()
    );
    // Exactly the partner's file.
    let media = dir.join("fixtures/telemessage-o2/2026-11-20/media");
    let delivered = std::fs::read_dir(&media)
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .find(|bytes| bytes.len() == original.len())
        .expect("the recording in the drop");
    assert_eq!(delivered, original);

    // In Bob's mailbox: the call without its recording, the listing in its place.
    let call = messages(&dir.join("var/mail"), "bob.jones@contoso.com", FOLDER)
        .into_iter()
        .map(|p| std::fs::read(p).unwrap())
        .find(|m| header(m, "X-Comms-Archiver-Item-Id").as_deref() == Some("O2-20261120-C003"))
        .expect("the call is in Bob's mailbox");
    assert!(call.len() <= 10485760);
    let text = String::from_utf8_lossy(&call);
    assert!(text.contains("files-left-out.txt"), "{text}");
    let listing = mail_parser::MessageParser::default()
        .parse(&call)
        .unwrap()
        .attachments()
        .find(|a| a.attachment_name() == Some("files-left-out.txt"))
        .map(|a| String::from_utf8_lossy(a.contents()).to_string())
        .unwrap();
    assert!(
        listing.contains(file["sha256"].as_str().unwrap()),
        "{listing}"
    );
    assert!(
        listing.contains(file["kept"].as_str().unwrap()),
        "{listing}"
    );
    assert!(
        listing.contains(file["name"].as_str().unwrap()),
        "{listing}"
    );
    assert_eq!(in_maildir(dir), n(&day, "imported") + 1);

    // The kept file is verified like the staged messages: by the SHA-256 it is named by.
    let verify = ["check", "--verify-stage", "--date", DEMO_DATE];
    assert_eq!(o2(dir, &verify).status.code(), Some(0));
    let mut changed = original;
    changed[100] ^= 1;
    std::fs::write(&kept, changed).unwrap();
    let out = o2(dir, &verify);
    assert_eq!(out.status.code(), Some(1));
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("no longer have the SHA-256 it is named by"),
        "{said}"
    );
}

/// The binary run as on a host whose clock is `offset` off (libfaketime's syntax: "-10m").
fn o2_on_a_host_off_by(dir: &Path, offset: &str, args: &[&str]) -> std::process::Output {
    let tail = ["--config", "config/demo.toml", "--connector", "o2"];
    on_clock(
        &mut std::process::Command::new(env!("CARGO_BIN_EXE_comms-archiver")),
        offset,
    )
    .args([args, &tail[..]].concat())
    .current_dir(dir)
    .env_remove("RUST_LOG")
    .env_remove("COMMS_ARCHIVER_CONFIG")
    .output()
    .unwrap()
}

#[test]
fn runs_of_one_day_on_hosts_whose_clocks_disagree_are_counted_in_the_order_they_ran() {
    // Daemons sharing a stage run one day's runs one after another (the day's lease), each
    // stamping its run with its own host's clock. The day's run on a host ten minutes
    // ahead, then a re-drive on a host ten minutes behind: by their clocks the re-drive
    // started twenty minutes before the run whose held copy it delivered.
    let ws = workspace();
    let dir = ws.path();
    let run = o2_on_a_host_off_by(dir, "+10m", &["once", "--date", DEMO_DATE]);
    assert_eq!(
        run.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let before = json(&o2(
        dir,
        &["report", "--date", DEMO_DATE, "--format", "json"],
    ));
    fix_the_mapping(dir);
    let redrive = o2_on_a_host_off_by(dir, "-10m", &["redrive", "--date", DEMO_DATE]);
    assert_eq!(
        redrive.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&redrive.stderr)
    );
    assert_eq!(items_in(dir, DESK_3_MAILBOX), ["O2-20261120-0010"]);

    let runs = json(&o2(
        dir,
        &["report", "--date", DEMO_DATE, "--runs", "--format", "json"],
    ));
    let kinds: Vec<&str> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run"]["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["delivery", "redrive"], "in the order they ran");
    let day = json(&o2(
        dir,
        &["report", "--date", DEMO_DATE, "--format", "json"],
    ));
    assert_eq!(n(&day, "imported"), n(&before, "imported") + 1, "{day}");
    assert_eq!(n(&day, "held"), n(&before, "held") - 1, "{day}");
    assert_eq!(
        n(&day, "available_for_import"),
        n(&before, "available_for_import")
    );
    assert_eq!(in_maildir(dir), n(&day, "imported"));
}

//! The local stage's disk fills up in the middle of a day: the run stops with an error that
//! says so, nothing is lost or imported twice, and once there is space again the next run
//! finishes the day and its status logs say it resumed an unfinished run.
//!
//! A real full disk: a 32 MiB tmpfs mounted on the stage directory inside a private mount
//! namespace (`unshare`, util-linux), nearly filled before the first run and emptied before the
//! second; both runs happen inside the namespace, which ends with them.

use crate::support::*;
use std::process::Command;

#[test]
fn a_full_stage_disk_stops_the_day_and_the_next_run_finishes_it() {
    let ws = workspace();
    let dir = ws.path();
    std::fs::create_dir_all(dir.join("var/stage")).unwrap();
    let binary = env!("CARGO_BIN_EXE_comms-archiver");
    let script = format!(
        r#"set -u
mount -t tmpfs -o size=32m tmpfs var/stage || exit 90
# Leave about 100 KiB: the day's staged messages, held items (the call over the limit is
# kept whole, 15 MB) and ledger records need more.
dd if=/dev/zero of=var/stage/filler bs=4k count=8167 status=none
"{binary}" once --config config/demo.toml --date 2026-11-20 >out/first.txt 2>&1
echo $? >out/first.code
rm var/stage/filler
"{binary}" once --config config/demo.toml --date 2026-11-20 >out/second.txt 2>&1
echo $? >out/second.code
cp -r var/stage/reports out/reports
"#
    );
    std::fs::create_dir_all(dir.join("out")).unwrap();
    let status = Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "sh", "-c", &script])
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .status()
        .expect("unshare runs (util-linux)");
    assert_eq!(
        status.code(),
        Some(0),
        "the namespace with a tmpfs on the stage could not be set up"
    );
    let read = |name: &str| std::fs::read_to_string(dir.join("out").join(name)).unwrap();

    assert_eq!(read("first.code").trim(), "1", "{}", read("first.txt"));
    assert!(
        read("first.txt").contains("No space left on device"),
        "the error says why: {}",
        read("first.txt")
    );
    assert_eq!(read("second.code").trim(), "3", "{}", read("second.txt"));

    // Every mailbox holds the demo day, each message once.
    assert_eq!(counts(&dir.join("var/mail"), FOLDER), expected());
    let mut ids = std::collections::HashSet::new();
    for mailbox in std::fs::read_dir(dir.join("var/mail")).unwrap() {
        let mailbox = mailbox.unwrap().path();
        for folder in std::fs::read_dir(&mailbox).unwrap() {
            let folder = folder.unwrap();
            let name = folder.file_name().to_string_lossy().into_owned();
            let Some(folder) = name.strip_prefix(".INBOX.") else {
                continue;
            };
            let mail = mailbox.parent().unwrap();
            let who = mailbox.file_name().unwrap().to_string_lossy().into_owned();
            for path in messages(mail, &who, folder) {
                let id = header(&std::fs::read(path).unwrap(), "Message-ID").unwrap();
                assert!(ids.insert((who.clone(), id.clone())), "{id} twice in {who}");
            }
        }
    }
    assert_eq!(ids.len(), 37);

    // The finished day's logs: complete, and the interrupted connector says it resumed.
    let logs: Vec<comms_archiver::report::StatusLog> = ["merge1", "o2", "sl2", "whatsapp"]
        .iter()
        .map(|c| {
            let path = dir.join(format!("out/reports/{c}/2026-11-20.json"));
            serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
        })
        .collect();
    assert!(logs.iter().all(|l| l.complete));
    assert!(
        logs.iter().any(|l| l.resumed),
        "the day the disk interrupted is marked as resumed"
    );
}

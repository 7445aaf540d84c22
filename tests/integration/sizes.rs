//! No size a partner sends can exhaust memory: a huge file in a drop, a message that
//! inflates without end, a partner answering without end. Each is the item's failure
//! (`size_exceeded`, with what and how large), never the process's death, and the rest of the
//! day is imported.

use crate::support::*;
use std::path::Path;
use std::process::Command;

const GIB: u64 = 1024 * 1024 * 1024;
/// What the daemon may reach with any one such item: a few items in flight at most.
const RSS_BOUND_KB: u64 = 300 * 1024;

/// Runs `once` for the day under Python's getrusage: (exit code, peak RSS of the run in KiB).
fn once_measured(dir: &Path, config: &str, connector: &str) -> (Option<i32>, u64) {
    let script = "import resource, subprocess, sys\n\
                  code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode\n\
                  print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)";
    let out = Command::new("python3")
        .args(["-c", script, env!("CARGO_BIN_EXE_comms-archiver")])
        .args([
            "once",
            "--config",
            config,
            "--date",
            "2026-11-20",
            "--connector",
            connector,
        ])
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let mut words = text.split_whitespace();
    let code = words.next().and_then(|c| c.parse().ok());
    let rss = words
        .next()
        .and_then(|r| r.parse().ok())
        .expect("ru_maxrss");
    (code, rss)
}

fn status_log(dir: &Path, connector: &str) -> serde_json::Value {
    let path = dir.join(format!("var/stage/reports/{connector}/2026-11-20.json"));
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The day completed, the one item failed size_exceeded with `says` in its detail, and every
/// other copy of the day imported as on an ordinary day.
fn only_that_item_failed(dir: &Path, connector: &str, item: &str, says: &str) {
    let log = status_log(dir, connector);
    assert_eq!(log["complete"], true, "{log}");
    let failures = log["failures"].as_array().unwrap();
    let theirs: Vec<_> = failures.iter().filter(|f| f["item_id"] == item).collect();
    assert!(!theirs.is_empty(), "{item} is not reported: {log}");
    for f in theirs {
        assert_eq!(f["reason"], "size_exceeded", "{f}");
        let detail = f["detail"].as_str().unwrap();
        assert!(detail.contains(says), "{detail}");
    }
    assert!(log["imported"].as_u64().unwrap() > 0, "{log}");
}

#[test]
fn a_3_gib_file_in_a_drop_is_failed_by_its_size_unread() {
    let ws = workspace();
    let media = ws
        .path()
        .join("fixtures/telemessage-o2/2026-11-20/media/O2-20261120-0005-termsheet.png");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&media)
        .unwrap()
        .set_len(3 * GIB)
        .unwrap();
    let (code, rss) = once_measured(ws.path(), "config/demo.toml", "o2");
    assert_eq!(code, Some(0));
    only_that_item_failed(ws.path(), "o2", "O2-20261120-0005", "3221225472 bytes");
    assert!(rss < RSS_BOUND_KB, "peak RSS {rss} KiB");
}

#[test]
fn a_2_gib_message_in_an_eml_drop_is_failed_from_its_header_block() {
    let ws = workspace();
    let eml = ws
        .path()
        .join("fixtures/merge1-celltrust/2026-11-20/merge1-0002.eml");
    let id = header(&std::fs::read(&eml).unwrap(), "Message-ID").unwrap();
    let id = id.trim_matches(['<', '>']).to_string();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&eml)
        .unwrap()
        .set_len(2 * GIB)
        .unwrap();
    let (code, rss) = once_measured(ws.path(), "config/demo.toml", "merge1");
    assert_eq!(code, Some(0));
    only_that_item_failed(ws.path(), "merge1", &id, "2147483648 bytes");
    assert!(rss < RSS_BOUND_KB, "peak RSS {rss} KiB");
}

/// A TeleMessage ZIP of a few MB whose one EML inflates to 2 GiB.
#[test]
fn a_zip_entry_inflating_to_2_gib_is_failed_uninflated() {
    let ws = workspace();
    let dir = ws.path();
    let zips = dir.join("fixtures/telemessage-zip");
    let zip = std::fs::read_dir(&zips)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "zip"))
        .unwrap();
    // The same ZIP with TM-20261120-0002.eml grown by 2 GiB of blank body lines, deflated.
    let script = "import sys, zipfile, shutil\n\
        src, dst = sys.argv[1], sys.argv[2]\n\
        with zipfile.ZipFile(src) as a, zipfile.ZipFile(dst, 'w', zipfile.ZIP_DEFLATED) as b:\n\
        \x20   for info in a.infolist():\n\
        \x20       data = a.read(info)\n\
        \x20       if info.filename != 'TM-20261120-0002.eml':\n\
        \x20           b.writestr(info, data)\n\
        \x20           continue\n\
        \x20       grown = zipfile.ZipInfo(info.filename, info.date_time)\n\
        \x20       grown.compress_type = zipfile.ZIP_DEFLATED\n\
        \x20       with b.open(grown, 'w', force_zip64=True) as w:\n\
        \x20           w.write(data)\n\
        \x20           block = b'\\r\\n' * (1 << 20)\n\
        \x20           for _ in range(1024):\n\
        \x20               w.write(block)\n";
    let grown = zips.join("grown.zip");
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(&zip)
        .arg(&grown)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::rename(&grown, &zip).unwrap();
    assert!(std::fs::metadata(&zip).unwrap().len() < 16 * 1024 * 1024);
    let demo = std::fs::read_to_string(dir.join("config/demo.toml")).unwrap();
    let zipped = demo.replace(
        "transport = \"drop\"\npath = \"fixtures/telemessage-o2\"",
        "transport = \"zip-drop\"\npath = \"fixtures/telemessage-zip\"",
    );
    std::fs::write(dir.join("config/zip.toml"), &zipped).unwrap();
    let (code, rss) = once_measured(dir, "config/zip.toml", "o2");
    assert_eq!(code, Some(0));
    only_that_item_failed(dir, "o2", "TM-20261120-0002", "inflates to more than");
    assert!(rss < RSS_BOUND_KB, "peak RSS {rss} KiB");
}

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
    assert_eq!(code, Some(3));
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
    assert_eq!(code, Some(3));
    only_that_item_failed(ws.path(), "merge1", &id, "2147483648 bytes");
    assert!(rss < RSS_BOUND_KB, "peak RSS {rss} KiB");
}

/// config/zip.toml: the demo with the O2 connector on the TeleMessage ZIP drop.
fn zip_config(dir: &Path) {
    let demo = std::fs::read_to_string(dir.join("config/demo.toml")).unwrap();
    let zipped = demo.replace(
        "transport = \"drop\"\npath = \"fixtures/telemessage-o2\"",
        "transport = \"zip-drop\"\npath = \"fixtures/telemessage-zip\"",
    );
    std::fs::write(dir.join("config/zip.toml"), &zipped).unwrap();
}

/// Rewrites `zip` in place with a Python script reading `sys.argv[1]` and writing
/// `sys.argv[2]`.
fn rewrite(zip: &Path, script: &str) {
    let rewritten = zip.with_extension("rewritten");
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(zip)
        .arg(&rewritten)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::rename(&rewritten, zip).unwrap();
}

/// The shipped TeleMessage ZIP.
fn shipped_zip(dir: &Path) -> std::path::PathBuf {
    std::fs::read_dir(dir.join("fixtures/telemessage-zip"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "zip"))
        .unwrap()
}

/// A ZIP whose central directory declares one EML of 100 GB (it holds 502 bytes): the
/// declared size is never trusted, so nothing is allocated by it and the message imports.
#[test]
fn a_zip_entry_declaring_100_gb_allocates_nothing_by_it() {
    let ws = workspace();
    let dir = ws.path();
    let zip = shipped_zip(dir);
    let script = "import sys, zipfile\n\
        src, dst = sys.argv[1], sys.argv[2]\n\
        with zipfile.ZipFile(src) as a, zipfile.ZipFile(dst, 'w', zipfile.ZIP_DEFLATED) as b:\n\
        \x20   for info in a.infolist():\n\
        \x20       b.writestr(info, a.read(info))\n\
        \x20   for info in b.filelist:\n\
        \x20       if info.filename == 'TM-20261120-0002.eml':\n\
        \x20           info.file_size = 100 * 10**9\n";
    rewrite(&zip, script);
    zip_config(dir);
    let (code, rss) = once_measured(dir, "config/zip.toml", "o2");
    assert_eq!(code, Some(0), "the run did not end normally");
    let log = status_log(dir, "o2");
    assert_eq!(log["complete"], true, "{log}");
    assert_eq!(log["imported"], 3, "{log}");
    assert!(rss < RSS_BOUND_KB, "peak RSS {rss} KiB");
}

/// A TeleMessage ZIP of a few MB whose one EML inflates to 2 GiB.
#[test]
fn a_zip_entry_inflating_to_2_gib_is_failed_uninflated() {
    let ws = workspace();
    let dir = ws.path();
    let zip = shipped_zip(dir);
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
    rewrite(&zip, script);
    assert!(std::fs::metadata(&zip).unwrap().len() < 16 * 1024 * 1024);
    zip_config(dir);
    let (code, rss) = once_measured(dir, "config/zip.toml", "o2");
    assert_eq!(code, Some(3));
    only_that_item_failed(dir, "o2", "TM-20261120-0002", "inflates to more than");
    assert!(rss < RSS_BOUND_KB, "peak RSS {rss} KiB");
}

/// A partner answering every request with a body that never ends (after `head`), counting
/// what it sent; the client must hang up soon after its bound.
fn endless_partner(head: &'static str) -> (u16, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicU64, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let sent = std::sync::Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let counter = counter.clone();
            std::thread::spawn(move || {
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request);
                if stream.write_all(head.as_bytes()).is_err() {
                    return;
                }
                let block = vec![b'7'; 1 << 20];
                // At most 8 GiB, so that a client that never stops cannot keep this running.
                for _ in 0..8192 {
                    if stream.write_all(&block).is_err() {
                        return;
                    }
                    counter.fetch_add(block.len() as u64, Ordering::SeqCst);
                }
            });
        }
    });
    (port, sent)
}

fn client(port: u16) -> comms_archiver::sources::https::PartnerClient {
    comms_archiver::install_crypto_provider();
    use comms_archiver::sources::https::{Auth, HttpsSettings, PartnerClient};
    PartnerClient::new(
        "o2",
        format!("http://127.0.0.1:{port}/api/").parse().unwrap(),
        Auth::ApiKey {
            key: comms_archiver::secret::Secret::from_value("key"),
        },
        HttpsSettings {
            page_size: 200,
            overlap: chrono::Duration::hours(6),
            timeout: std::time::Duration::from_secs(60),
            max_retries: 0,
            retry_initial: std::time::Duration::from_millis(10),
            max_page_bytes: 64 * 1024 * 1024,
            max_item_bytes: 10 * 1024 * 1024,
        },
    )
    .unwrap()
}

const MIB: u64 = 1024 * 1024;

#[tokio::test]
async fn an_endless_media_download_stops_past_what_the_item_may_weigh() {
    use comms_archiver::sources::SourceError;
    use std::sync::atomic::Ordering;
    // No Content-Length, the connection never closes from the partner's side.
    let (port, sent) = endless_partner("HTTP/1.1 200 OK\r\nContent-Type: video/mp4\r\n\r\n");
    let e = client(port)
        .get_media("media/v.mp4", 10 * MIB)
        .await
        .unwrap_err();
    assert!(matches!(e, SourceError::TooLarge(_)), "{e}");
    assert!(e.to_string().contains("10485760 bytes"), "{e}");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let sent = sent.load(Ordering::SeqCst);
    assert!(sent < 10 * MIB + 64 * MIB, "the partner sent {sent} bytes");
}

#[tokio::test]
async fn a_false_content_length_is_no_licence_to_read_on() {
    use comms_archiver::sources::SourceError;
    use std::sync::atomic::Ordering;
    // Chunked, with a Content-Length that claims little: the body is read as it comes.
    let (port, sent) = endless_partner(
        "HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 100000000000\r\n\r\n",
    );
    let e = client(port)
        .get_media("media/p.png", 10 * MIB)
        .await
        .unwrap_err();
    assert!(matches!(e, SourceError::TooLarge(_)), "{e}");
    assert!(e.to_string().contains("100000000000 bytes"), "{e}");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(sent.load(Ordering::SeqCst) < 64 * MIB);
}

#[tokio::test]
async fn a_page_of_a_gigabyte_is_an_error_of_the_day_read_no_further() {
    use comms_archiver::sources::SourceError;
    use std::sync::atomic::Ordering;
    let (port, sent) =
        endless_partner("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"items\": [\"");
    let e = client(port).get("o2/items", &[]).await.unwrap_err();
    assert!(matches!(e, SourceError::Unavailable(_)), "{e}");
    let shown = e.to_string();
    assert!(
        shown.contains("max_page_bytes") && shown.contains("the day stays open"),
        "{shown}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let sent = sent.load(Ordering::SeqCst);
    assert!(sent < 64 * MIB + 64 * MIB, "the partner sent {sent} bytes");
}

/// A JSON Lines record of a gigabyte: counted against the manifest without being held, then
/// reported as a record that cannot be read (the day stays open), the rest imported.
#[test]
fn a_gigabyte_record_line_is_reported_unread() {
    let ws = workspace();
    let delivery = ws.path().join("fixtures/telemessage-o2/2026-11-20");
    let file = delivery.join("o2-messages-0001.jsonl");
    let size = std::fs::metadata(&file).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(size + GIB)
        .unwrap();
    let manifest = delivery.join("MANIFEST.json");
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    for f in m["files"].as_array_mut().unwrap() {
        if f["name"] == "o2-messages-0001.jsonl" {
            f["records"] = (f["records"].as_u64().unwrap() + 1).into();
        }
    }
    std::fs::write(&manifest, serde_json::to_vec(&m).unwrap()).unwrap();
    let (_, rss) = once_measured(ws.path(), "config/demo.toml", "o2");
    let log = status_log(ws.path(), "o2");
    assert_eq!(log["complete"], false, "{log}");
    let failure = log["failures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["reason"] == "invalid_payload")
        .unwrap_or_else(|| panic!("{log}"));
    let detail = failure["detail"].as_str().unwrap();
    assert!(detail.contains("1073741824 bytes"), "{detail}");
    assert!(log["imported"].as_u64().unwrap() > 0, "{log}");
    assert!(rss < RSS_BOUND_KB, "peak RSS {rss} KiB");
}

/// A day whose ZIPs inflate past the bound for one delivery is refused whole, before any of
/// it is imported: every entry is inflated once while reconciling, into nothing.
#[tokio::test]
async fn a_delivery_inflating_past_its_bound_is_refused_whole() {
    use comms_archiver::sources::{Source, SourceError, ZipDropSource};
    let ws = workspace();
    let zips = ws.path().join("fixtures/telemessage-zip");
    let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
    // The shipped ZIP inflates to 1,574 bytes.
    let within =
        ZipDropSource::new(&zips, phonenumber::country::Id::GB).with_max_delivery_inflated(1_574);
    assert!(within.open(day).await.is_ok());
    let past =
        ZipDropSource::new(&zips, phonenumber::country::Id::GB).with_max_delivery_inflated(1_573);
    match past.open(day).await {
        Err(SourceError::Reconciliation(why)) => {
            assert!(why.contains("inflate to more than 1573 bytes"), "{why}")
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a delivery over its bound was opened"),
    }
}

//! Helpers shared by the integration tests: scratch workspaces, the demo day, killing a run
//! part way, patched configurations, reading the Maildir tree; the scheduler scaffold in
//! [`daemon`]; a Maildir that holds appends at a gate in [`gated`].

pub mod daemon;
pub mod gated;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const FOLDER: &str = "O2 SMS and Voice Network Archiver";

/// A port on 127.0.0.1 that nothing listens on just now, for a service a test starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A scratch directory holding copies of config/ and fixtures/, as a user would run it.
pub fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&repo().join("config"), &dir.path().join("config"));
    copy_tree(&repo().join("fixtures"), &dir.path().join("fixtures"));
    dir
}

pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Makes `command` run as on a host whose clock is `offset` off the true time (libfaketime's
/// syntax: "-10m", "+7m"). The library is preloaded into the process itself, which stays the
/// one `command` starts (the `faketime` wrapper would fork it, and a kill would miss it).
pub fn on_clock<'a>(command: &'a mut Command, offset: &str) -> &'a mut Command {
    let library = std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .map(|arch| arch.unwrap().path().join("faketime/libfaketime.so.1"))
        .find(|path| path.exists())
        .expect("libfaketime (Debian package faketime), which .ci/run installs");
    command.env("LD_PRELOAD", library).env("FAKETIME", offset)
}

/// Runs the binary in `dir` with `args`.
pub fn cli(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_comms-archiver"))
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env_remove("COMMS_ARCHIVER_CONFIG")
        .output()
        .unwrap()
}

/// The messages stored in a mailbox's connector folder.
pub fn messages(mail_root: &Path, mailbox: &str, folder: &str) -> Vec<PathBuf> {
    let cur = mail_root
        .join(mailbox)
        .join(format!(".INBOX.{folder}"))
        .join("cur");
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&cur) {
        Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    files
}

/// Every mailbox directory under the tree, with its message count in `folder`.
pub fn counts(mail_root: &Path, folder: &str) -> Vec<(String, usize)> {
    let mut out: Vec<(String, usize)> = std::fs::read_dir(mail_root)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .map(|m| {
                    let n = messages(mail_root, &m, folder).len();
                    (m, n)
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// The header value of a raw message, if present.
pub fn header(raw: &[u8], name: &str) -> Option<String> {
    let message = mail_parser::MessageParser::default().parse(raw)?;
    message.header_raw(name).map(|v| v.trim().to_string())
}

/// What the demo day should leave in each mailbox.
pub const EXPECTED: &[(&str, usize)] = &[
    ("alice.smith@contoso.com", 6),
    ("bob.jones@contoso.com", 5),
    ("carol.white@contoso.com", 1),
    ("dan.brown@contoso.com", 1),
    ("emma.clark@contoso.com", 2),
    ("priya.patel@contoso.com", 1),
];

pub fn expected() -> Vec<(String, usize)> {
    EXPECTED.iter().map(|(m, n)| (m.to_string(), *n)).collect()
}

/// Stops a service a test started: SIGTERM (it saves its state and exits), SIGKILL after 10 s.
pub fn stop(mut child: std::process::Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The four connectors' status logs of the demo day, from a workspace's local stage.
pub fn demo_logs(
    dir: &Path,
) -> std::collections::BTreeMap<String, comms_archiver::report::StatusLog> {
    ["merge1", "o2", "sl2", "whatsapp"]
        .iter()
        .map(|c| {
            let path = dir.join(format!("var/stage/reports/{c}/2026-11-20.json"));
            (
                c.to_string(),
                serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap(),
            )
        })
        .collect()
}

/// How many copies a JSON log (`--log-format json`) reports imported.
pub fn imported_events(log: &[u8]) -> usize {
    String::from_utf8_lossy(log)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["target"] == "comms_archiver::item" && e["outcome"] == "imported")
        .count()
}

/// Runs a blocking command (a `once`) off the async runtime's threads and expects exit 0,
/// with its stderr in the failure message.
pub async fn succeeds(run: impl FnOnce() -> Output + Send + 'static) -> Output {
    finished(tokio::task::spawn_blocking(run).await.unwrap())
}

/// A run's output, once it is seen to have finished every day: exit 0, or 3 when copies
/// failed for good (the demo day has some); its stderr is in the failure message.
pub fn finished(out: Output) -> Output {
    assert!(
        matches!(out.status.code(), Some(0 | 3)),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The day the embedded default's fixtures deliver.
pub const DEMO_DATE: &str = "2026-11-20";

/// The demo fixtures' mailboxes.
pub const MAILBOXES: &[&str] = &[
    "alice.smith@contoso.com",
    "bob.jones@contoso.com",
    "carol.white@contoso.com",
    "dan.brown@contoso.com",
    "emma.clark@contoso.com",
    "priya.patel@contoso.com",
];

/// `once` on the embedded default's demo day in `dir` (after `leading`, e.g. the log
/// format), expected to succeed: its stderr is in the failure message.
pub fn demo_day(dir: &Path, leading: &[&str]) -> Output {
    let mut args = leading.to_vec();
    args.extend(["once", "--config", "config/demo.toml", "--date", DEMO_DATE]);
    finished(cli(dir, &args))
}

/// Reads the JSON log of a spawned run (stderr piped) and kills it with SIGKILL, which
/// leaves no chance to record or clean up anything, once `n` copies are imported. Returns
/// the imports seen (fewer than `n` when the run ended first) and how the run ended.
pub fn kill_after_imports(
    child: &mut std::process::Child,
    n: usize,
) -> (usize, std::process::ExitStatus) {
    use std::io::BufRead;
    let stderr = child.stderr.take().expect("stderr piped");
    let mut seen = 0;
    for line in std::io::BufReader::new(stderr).lines() {
        let Ok(line) = line else { break };
        if line.contains("\"outcome\":\"imported\"") {
            seen += 1;
            if seen == n {
                child.kill().unwrap();
                break;
            }
        }
    }
    (seen, child.wait().unwrap())
}

/// A configuration text with every occurrence of each `from` replaced by its `to`. Every
/// `from` must be there: a patch that silently misses would test the unpatched file.
pub fn patched(text: &str, edits: &[(&str, &str)]) -> String {
    let mut out = text.to_string();
    for (from, to) in edits {
        assert!(
            out.contains(from),
            "the configuration has no {from:?} to patch"
        );
        out = out.replace(from, to);
    }
    out
}

/// Every enabled connector's day, run in-process; the status logs by connector.
pub async fn run_in_process(
    config: &comms_archiver::config::Config,
    day: chrono::NaiveDate,
) -> std::collections::BTreeMap<String, comms_archiver::report::StatusLog> {
    comms_archiver::install_crypto_provider();
    let archiver = comms_archiver::pipeline::Archiver::from_config(config).unwrap();
    archiver
        .run_days(&[day], None)
        .await
        .into_iter()
        .map(|r| (r.connector, r.log.unwrap()))
        .collect()
}

/// The demo configuration's text with its paths inside `dir`.
pub fn demo_text(dir: &Path) -> String {
    rooted(
        &std::fs::read_to_string(dir.join("config/demo.toml")).unwrap(),
        dir,
    )
}

/// The demo configuration with its paths inside `dir`, for a run in-process.
pub fn demo_config(dir: &Path) -> comms_archiver::config::Config {
    comms_archiver::config::Config::from_toml(Path::new("demo.toml"), &demo_text(dir), &[]).unwrap()
}

/// A configuration text with its relative paths (`config/`, `fixtures/`, `var/`) made
/// absolute under `dir`, for a configuration used in-process.
pub fn rooted(text: &str, dir: &Path) -> String {
    let d = dir.display();
    text.replace("\"config/", &format!("\"{d}/config/"))
        .replace("\"fixtures/", &format!("\"{d}/fixtures/"))
        .replace("\"var/", &format!("\"{d}/var/"))
}

/// A `[stage]` of config/demo-azurite.toml aimed at the Azurite at `endpoint`, retrying
/// once within `timeout_secs`.
pub fn azurite_stage(text: &str, endpoint: &str, timeout_secs: u64) -> String {
    let quick = format!("auth = \"sas\"\nmax_retries = 1\ntimeout_secs = {timeout_secs}");
    patched(
        text,
        &[
            ("http://127.0.0.1:10000/devstoreaccount1", endpoint),
            ("auth = \"sas\"", &quick),
        ],
    )
}

/// The run logs of one connector-day in a workspace's local stage, oldest first.
pub fn run_logs(dir: &Path, connector: &str, day: &str) -> Vec<serde_json::Value> {
    let runs = dir.join(format!("var/stage/runs/{connector}/{day}"));
    let mut logs: Vec<serde_json::Value> = std::fs::read_dir(runs)
        .map(|entries| {
            entries
                .map(|e| {
                    serde_json::from_slice(&std::fs::read(e.unwrap().path()).unwrap()).unwrap()
                })
                .collect()
        })
        .unwrap_or_default();
    logs.sort_by_key(|l| {
        l["run"]["started_at"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    });
    logs
}

//! Three daemons on one Azurite container share one day: each takes mailbox shards of the
//! day's delivery until none is left. One of them is SIGKILLed in the middle of a shard;
//! another takes the shard over once its lease runs out (each daemon runs on a host of its
//! own, a UTS namespace with its own name, so nobody can see the victim's process is gone),
//! and every copy is imported exactly once, through a fake Graph that is slow enough for
//! a shard to take a while. The three hosts' clocks disagree by minutes (libfaketime), as
//! nothing the daemons share may depend on them.
//!
//! The run is seeded (printed; `SHARDS_SEED=<n>` repeats it): the seed makes the day, picks
//! which daemon is watched first for a shard to die in and how far into it the victim dies.

use crate::azurite::{sas, Azurite};
use crate::graph_fake::FakeGraph;
use crate::support::*;
use comms_archiver::ledger::shard_of;
use comms_archiver::stage::Stage;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const DAY: &str = "2026-11-25";

/// A line on the test's stderr as such, not captured: the seed and who did what show in CI's
/// log even when the test passes.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}
const SHARDS: u32 = 12;
const LEASE_SECS: u64 = 10;
/// How far each daemon's host clock is off (libfaketime's syntax), none for the true time.
const CLOCKS: [Option<&str>; 3] = [Some("-4m"), None, Some("+7m")];

/// One daemon: `once` for the day in a UTS namespace named `name`, on a clock of its own,
/// JSON logs to a file.
struct Daemon {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    fn start(dir: &Path, name: &str, clock: Option<&str>) -> Daemon {
        let log = dir.join(format!("{name}.log"));
        let binary = env!("CARGO_BIN_EXE_comms-archiver");
        let mut command = Command::new("unshare");
        if let Some(offset) = clock {
            on_clock(&mut command, offset);
        }
        let child = command
            .args(["--user", "--map-root-user", "--uts", "sh", "-c"])
            .arg("hostname \"$0\" && exec \"$@\"")
            .arg(name)
            .arg(binary)
            .args([
                "--log-format",
                "json",
                "once",
                "--config",
                "shards.toml",
                "--date",
                DAY,
            ])
            .current_dir(dir)
            .env_remove("RUST_LOG")
            .env("COMMS_ARCHIVER_AZURITE_SAS", sas())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("unshare runs (util-linux)");
        Daemon {
            name: name.to_string(),
            child: Some(child),
            log,
        }
    }

    fn events(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .map(|e| {
                let mut fields = e.get("fields").cloned().unwrap_or(e.clone());
                fields["target"] = e["target"].clone();
                fields
            })
            .collect()
    }

    /// (connector, shard, line) of each of its log lines saying `message` of a shard.
    fn shard_lines(&self, message: &str) -> Vec<(String, u64, Value)> {
        self.events()
            .into_iter()
            .filter(|e| e["message"] == message)
            .map(|e| {
                (
                    e["connector"].as_str().unwrap_or_default().to_string(),
                    e["shard"].as_u64().unwrap_or(u64::MAX),
                    e,
                )
            })
            .collect()
    }

    /// (connector, shard, recovering) of every shard it started delivering: recovering when
    /// it may find some of the shard's copies imported already (a takeover within the
    /// day's round, or a later round of a day whose holder stopped).
    fn shards_started(&self) -> Vec<(String, u64, bool)> {
        self.shard_lines("delivering shard")
            .into_iter()
            .map(|(c, s, e)| (c, s, e["recovering"].as_bool().unwrap_or(false)))
            .collect()
    }

    /// (connector, shard, copies) of every shard it started delivering.
    fn shard_sizes(&self) -> Vec<(String, u64, usize)> {
        self.shard_lines("delivering shard")
            .into_iter()
            .map(|(c, s, e)| (c, s, e["copies"].as_u64().unwrap_or(0) as usize))
            .collect()
    }

    /// (connector, shard) of every shard it recorded as delivered.
    fn shards_delivered(&self) -> Vec<(String, u64)> {
        self.shard_lines("shard delivered")
            .into_iter()
            .map(|(c, s, _)| (c, s))
            .collect()
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Waits for it to exit; its exit code.
    fn wait(&mut self, deadline: Instant) -> Option<i32> {
        let child = self.child.as_mut()?;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status.code();
            }
            if Instant::now() > deadline {
                self.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The staged copies among stage keys, as (mailbox, item key):
/// `staged/<connector>/<day>/<mailbox>/<key>.eml`.
fn staged_pairs(keys: &[String]) -> BTreeSet<(String, String)> {
    keys.iter()
        .filter_map(|key| {
            let parts: Vec<&str> = key.split('/').collect();
            let file = parts.last()?.strip_suffix(".eml")?;
            (parts.len() == 5).then(|| (parts[3].to_string(), file.to_string()))
        })
        .collect()
}

/// The copies the fake Graph holds, as (mailbox, item key), with how many times each: the
/// messages with an item key (a temporary draft from MIME has none).
fn graph_copies(graph: &FakeGraph) -> BTreeMap<(String, String), usize> {
    let mut copies = BTreeMap::new();
    for message in graph.messages() {
        let key = message
            .properties
            .iter()
            .find(|(id, _)| id.contains("CommsArchiverItemKey"))
            .map(|(_, v)| v.clone());
        if let Some(key) = key {
            assert!(!message.is_draft, "an imported copy is not a draft");
            *copies.entry((message.mailbox.clone(), key)).or_default() += 1;
        }
    }
    copies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_daemons_share_a_day_and_one_killed_mid_shard_loses_and_repeats_nothing() {
    use comms_archiver_testkit::simulator::{Simulator, SimulatorConfig};
    let seed: u64 = std::env::var("SHARDS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64
                % 1_000_000
        });
    let (items, mailboxes) = (900usize, 30usize);
    let first = (seed % 3) as usize;
    let kill_after = 2 + (seed / 3 % 6) as usize;
    say!(
        "shards: SHARDS_SEED={seed} items={items} mailboxes={mailboxes} shards={SHARDS} \
         daemon-{first} watched first, killed after {kill_after} imports into its shard"
    );

    let ws = workspace();
    let dir = ws.path().to_path_buf();
    let azurite = Azurite::start(&dir.join("azurite"));
    let mut sim_config = SimulatorConfig::new(dir.join("fixtures"));
    sim_config.workload = Some(comms_archiver_testkit::workload::Workload {
        items,
        mailboxes,
        seed,
    });
    let (sim_addr, sim_task) = Simulator::new(sim_config)
        .start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let names: Vec<String> = (0..mailboxes)
        .map(|k| format!("user{k}@contoso.com"))
        .collect();
    let graph = FakeGraph::new(&names.iter().map(String::as_str).collect::<Vec<_>>());
    graph.latency_ms.store(25, Ordering::SeqCst);
    let (graph_port, server) = graph.start().await;

    let azure = std::fs::read_to_string(dir.join("config/demo-azurite.toml")).unwrap();
    let stage_section = azure
        .split("[stage]")
        .nth(1)
        .and_then(|rest| rest.split("\n[").next())
        .map(|body| format!("[stage]{body}"))
        .unwrap();
    let text = crate::graph::generated_day_on_graph(&dir, sim_addr, graph_port)
        .replace(
            &format!(
                "[stage]\nkind = \"local\"\npath = \"{}/var/stage\"\n",
                dir.display()
            ),
            &format!(
                "{}\n",
                azurite_stage(&stage_section, &azurite.endpoint(), 5).trim_end()
            ),
        )
        .replace(
            "[archiver]\n",
            &format!("[archiver]\ndelivery_shards = {SHARDS}\nlease_secs = {LEASE_SECS}\n"),
        );
    assert!(
        text.contains("kind = \"azure\"") && text.contains("delivery_shards"),
        "{text}"
    );
    std::fs::write(dir.join("shards.toml"), &text).unwrap();

    say!("shards: host clocks {CLOCKS:?}");
    let mut daemons: Vec<Daemon> = (0..3)
        .map(|n| Daemon::start(&dir, &format!("daemon-{n}"), CLOCKS[n]))
        .collect();

    // The victim is the first daemon, from the seed's pick on, caught in the middle of a
    // shard: `kill_after` of the shard's copies imported since it was seen started, and at
    // least half of them still to go. (Whichever daemon it is: the seed cannot tell which of
    // them holds which day, nor which shards each will take.)
    let stage = crate::azure::stage(&azurite);
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut staged_of: BTreeMap<String, BTreeSet<(String, String)>> = BTreeMap::new();
    let mut seen: BTreeMap<(usize, String, u64), usize> = BTreeMap::new();
    let (victim, killed_connector, killed_shard) = 'watch: loop {
        if Instant::now() > deadline {
            let who: Vec<String> = daemons
                .iter()
                .map(|d| {
                    format!(
                        "{}: started {:?}, delivered {:?}",
                        d.name,
                        d.shards_started(),
                        d.shards_delivered()
                    )
                })
                .collect();
            panic!(
                "no daemon was caught in the middle of a shard (SHARDS_SEED={seed}):\n{}",
                who.join("\n")
            );
        }
        let copies = graph_copies(&graph);
        for offset in 0..daemons.len() {
            let n = (first + offset) % daemons.len();
            let delivered = daemons[n].shards_delivered();
            for (connector, shard, total) in daemons[n].shard_sizes() {
                if delivered.contains(&(connector.clone(), shard)) {
                    continue;
                }
                // A shard is started once its connector's collection is whole: the copies
                // staged for it are all there to list.
                if !staged_of.contains_key(&connector) {
                    let keys = stage
                        .list(&format!("staged/{connector}/{DAY}/"))
                        .await
                        .unwrap();
                    staged_of.insert(connector.clone(), staged_pairs(&keys));
                }
                let staged = &staged_of[&connector];
                let now = copies
                    .keys()
                    .filter(|pair| {
                        u64::from(shard_of(&pair.0, SHARDS)) == shard && staged.contains(*pair)
                    })
                    .count();
                let base = *seen.entry((n, connector.clone(), shard)).or_insert(now);
                if now >= base + kill_after && 2 * now <= total {
                    daemons[n].kill();
                    break 'watch (n, connector, shard);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    say!("shards: daemon-{victim} SIGKILLed in shard {killed_shard} of {killed_connector}");

    let deadline = Instant::now() + Duration::from_secs(300);
    for (n, daemon) in daemons.iter_mut().enumerate() {
        if n == victim {
            continue;
        }
        let code = daemon.wait(deadline);
        assert!(
            matches!(code, Some(0) | Some(3)),
            "{} ended with {code:?}:\n{}",
            daemon.name,
            std::fs::read_to_string(&daemon.log).unwrap()
        );
    }

    // Each daemon ran on its clock: the skewed ones saw their clocks off the stage's.
    for (daemon, clock) in daemons.iter().zip(CLOCKS) {
        let side = match clock {
            Some(off) if off.starts_with('-') => "behind",
            Some(_) => "ahead of",
            None => continue,
        };
        let said = daemon.events().into_iter().any(|e| {
            e["message"].as_str().is_some_and(|m| {
                m.starts_with("this host's clock is at least")
                    && m.contains(&format!("{side} the stage's:"))
            })
        });
        assert!(said, "{} ran {clock:?} off: its log says so", daemon.name);
    }

    // Who delivered what.
    let mut by_daemon = BTreeMap::new();
    for daemon in &daemons {
        let delivered = daemon.shards_delivered();
        let started = daemon.shards_started();
        say!(
            "shards: {} started {} shard(s), recorded {} as delivered: {:?}",
            daemon.name,
            started.len(),
            delivered.len(),
            delivered
        );
        by_daemon.insert(daemon.name.clone(), (started, delivered));
    }
    for (name, (started, _)) in &by_daemon {
        assert!(!started.is_empty(), "{name} delivered no shard");
    }
    let taker: Vec<&String> = by_daemon
        .iter()
        .filter(|(name, (started, delivered))| {
            **name != format!("daemon-{victim}")
                && started.contains(&(killed_connector.clone(), killed_shard, true))
                && delivered.contains(&(killed_connector.clone(), killed_shard))
        })
        .map(|(name, _)| name)
        .collect();
    assert_eq!(
        taker.len(),
        1,
        "one daemon finished the killed shard, looking for what was there: {by_daemon:?}"
    );
    // The taker imported what the victim had not: it died in the middle of the shard.
    let taken = daemons
        .iter()
        .find(|d| &d.name == taker[0])
        .unwrap()
        .events()
        .into_iter()
        .rev()
        .find(|e| {
            e["message"] == "shard delivered"
                && e["connector"] == killed_connector.as_str()
                && e["shard"].as_u64() == Some(killed_shard)
        })
        .unwrap();
    say!(
        "shards: {} finished shard {killed_shard}: imported {}, found {} already there",
        taker[0],
        taken["imported"],
        taken["skipped"]
    );
    assert!(
        taken["imported"].as_u64().unwrap() > 0,
        "the victim had finished the shard's copies"
    );

    // Exactly once: every staged copy is in its mailbox once, and nothing else is, not
    // even a temporary draft the victim was making (the taker deletes those as it looks
    // for the copies the victim had not recorded).
    let copies = graph_copies(&graph);
    let drafts = graph.messages().iter().filter(|m| m.is_draft).count();
    assert_eq!(drafts, 0, "temporary drafts left");
    let twice: Vec<_> = copies.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "imported twice: {twice:?}");
    let staged = staged_pairs(&stage.list("staged/").await.unwrap());
    let imported: BTreeSet<(String, String)> = copies.keys().cloned().collect();
    assert_eq!(
        staged, imported,
        "every staged copy, and only those, in its mailbox"
    );

    // Each connector-day is complete, and its reconciliation adds up to what is there.
    let mut reconciled = 0;
    for connector in ["o2", "whatsapp", "sl2", "merge1"] {
        let bytes = stage
            .get(&format!("reports/{connector}/{DAY}.json"))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{connector} has its day's report"));
        let log: comms_archiver::report::StatusLog = serde_json::from_slice(&bytes).unwrap();
        assert!(log.complete, "{connector}: {log:?}");
        assert!(log.adds_up(), "{connector}: {log:?}");
        reconciled += log.imported + log.partially_imported;
    }
    assert_eq!(reconciled as usize, imported.len());
    say!(
        "shards: {} copies imported once each, {} staged; all four days complete",
        imported.len(),
        staged.len()
    );
    server.abort();
    sim_task.abort();
}

//! Importing through Microsoft Graph, against the fake Graph.

use crate::graph_fake::FakeGraph;
use crate::support::*;
use chrono::NaiveDate;
use comms_archiver::config::Config;
use comms_archiver::pipeline::Archiver;
use comms_archiver::report::StatusLog;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;

pub(crate) fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 20).unwrap()
}

/// The demo configuration with every path in `dir` and the mailboxes in the fake Graph.
pub(crate) fn graph_config(dir: &Path, port: u16) -> Config {
    let text = on_graph(&demo_text(dir), dir, port);
    Config::from_toml(Path::new("graph.toml"), &text, &[]).unwrap()
}

/// A configuration rooted in `dir` with its Maildir swapped for the fake Graph on `port`;
/// the client secret in a file.
fn on_graph(text: &str, dir: &Path, port: u16) -> String {
    std::fs::write(dir.join("graph-secret"), "graph-secret").unwrap();
    let d = dir.display();
    patched(
        text,
        &[(
            &format!("[mailbox]\nkind = \"maildir\"\npath = \"{d}/var/mail\""),
            &format!(
                "[mailbox]\nkind = \"graph\"\ntenant_id = \"tenant\"\nclient_id = \"app\"\n\
                 client_secret = {{ file = \"{d}/graph-secret\" }}\n\
                 graph_url = \"http://127.0.0.1:{port}/v1.0\"\ntoken_url = \"http://127.0.0.1:{port}/token\"\n\
                 allow_http_loopback = true\n"
            ),
        )],
    )
}

/// Message-ID -> Date (seconds) of every message of the Maildir demo run, and its logs.
fn maildir_run() -> (BTreeMap<String, i64>, BTreeMap<String, StatusLog>) {
    let ws = workspace();
    assert_eq!(
        cli(
            ws.path(),
            &[
                "once",
                "--config",
                "config/demo.toml",
                "--date",
                "2026-11-20"
            ]
        )
        .status
        .code(),
        Some(3)
    );
    let mut dates = BTreeMap::new();
    let mail = ws.path().join("var/mail");
    for mailbox in MAILBOXES {
        for folder in std::fs::read_dir(mail.join(mailbox)).unwrap() {
            let name = folder.unwrap().file_name().to_string_lossy().into_owned();
            let Some(folder) = name.strip_prefix(".INBOX.") else {
                continue;
            };
            for path in messages(&mail, mailbox, folder) {
                let raw = std::fs::read(path).unwrap();
                let parsed = mail_parser::MessageParser::default().parse(&raw).unwrap();
                dates.insert(
                    format!("<{}>", parsed.message_id().unwrap()),
                    parsed.date().unwrap().to_timestamp(),
                );
            }
        }
    }
    let logs = demo_logs(ws.path());
    (dates, logs)
}

/// The parts of a status log that must not depend on the mailbox backend.
fn outcome(log: &StatusLog) -> impl PartialEq + std::fmt::Debug {
    (
        log.complete,
        log.available_from_source,
        log.available_for_import,
        log.imported,
        log.skipped_duplicates,
        log.failed,
        log.failures.clone(),
        log.excluded,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_day_through_graph_is_received_dated_and_filed() {
    let (dates, maildir_logs) = tokio::task::spawn_blocking(maildir_run).await.unwrap();
    let ws = workspace();
    let graph = FakeGraph::new(MAILBOXES);
    let (port, server) = graph.start().await;
    // Throttling from the start: 429 and 503 with Retry-After, absorbed without a failure.
    graph.throttle.store(6, Ordering::SeqCst);
    let logs = run_in_process(&graph_config(ws.path(), port), day()).await;
    for (connector, log) in &logs {
        assert_eq!(
            outcome(log),
            outcome(&maildir_logs[connector]),
            "{connector}: the same status log as through IMAP/Maildir"
        );
    }
    assert!(graph.throttled.load(Ordering::SeqCst) >= 6);
    assert!(
        graph.max_in_flight() <= 4,
        "never more than 4 requests at once per mailbox"
    );

    let messages = graph.messages();
    assert_eq!(
        messages.len(),
        37,
        "no draft is left behind, nothing is twice"
    );
    for m in &messages {
        assert!(!m.is_draft, "{}: a draft", m.id);
        let id = m.json["internetMessageId"].as_str().unwrap();
        let received =
            chrono::DateTime::parse_from_rfc3339(m.json["receivedDateTime"].as_str().unwrap())
                .unwrap();
        assert_eq!(
            received.timestamp(),
            dates[id],
            "{id}: the original delivery time"
        );
        assert!(m
            .properties
            .contains_key(comms_archiver::mailbox::graph::ITEM_KEY_PROPERTY));
    }
    assert_eq!(
        graph.folders("alice.smith@contoso.com"),
        [
            "CellTrust",
            "CellTrust SL2",
            "O2 SMS and Voice Network Archiver",
            "WhatsApp Archiver"
        ]
    );
    // Each folder was looked up once, though a mailbox's first copies start together.
    for mailbox in MAILBOXES {
        assert_eq!(
            graph.folder_lookups(mailbox),
            graph.folders(mailbox).len(),
            "{mailbox}: one lookup per folder"
        );
    }
    // The call recording came along.
    let call = messages
        .iter()
        .find(|m| m.json["subject"] == "Voice call from Alice Smith to Mr Wong (answered, 4m 12s)")
        .unwrap();
    assert_eq!(call.attachments.len(), 1);
    assert_eq!(call.attachments[0].1.len(), 32044);

    // A second run imports nothing.
    let again = run_in_process(&graph_config(ws.path(), port), day()).await;
    assert!(again.values().all(|l| l.imported == 0 && l.complete));
    assert_eq!(graph.messages().len(), 37);
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_for_a_mailbox_not_created_yet_is_held_and_delivered_once_it_exists() {
    let ws = workspace();
    let without_priya: Vec<&str> = MAILBOXES
        .iter()
        .copied()
        .filter(|m| !m.starts_with("priya"))
        .collect();
    let graph = FakeGraph::new(&without_priya);
    let (port, server) = graph.start().await;
    let logs = run_in_process(&graph_config(ws.path(), port), day()).await;
    let o2 = &logs["o2"];
    let priya: Vec<_> = o2
        .held_copies
        .iter()
        .filter(|f| f.mailbox.as_deref() == Some("priya.patel@contoso.com"))
        .collect();
    assert_eq!(priya.len(), 1);
    assert_eq!(priya[0].reason, comms_archiver::report::Reason::UserMapping);
    assert_eq!(
        o2.unmapped_users
            .iter()
            .filter(|u| u.as_str() == "priya.patel@contoso.com")
            .count(),
        1
    );
    assert!(
        o2.complete,
        "a missing mailbox is not retried by the day: the copy is held"
    );
    let kept = priya[0].kept.clone();

    // The admin creates the mailbox; a re-drive delivers the held copy, once.
    graph.create_mailbox("priya.patel@contoso.com");
    let config = graph_config(ws.path(), port);
    let archiver = comms_archiver::pipeline::Archiver::from_config(&config).unwrap();
    for _ in 0..2 {
        let redriven = archiver.redrive_days(&[day()], Some("o2")).await;
        assert!(redriven.iter().all(|r| r.log.is_ok()), "{redriven:?}");
    }
    let in_priya: Vec<_> = graph
        .messages()
        .into_iter()
        .filter(|m| m.mailbox == "priya.patel@contoso.com" && !m.is_draft)
        .collect();
    assert_eq!(
        in_priya.len(),
        1,
        "delivered exactly once over two re-drives"
    );
    let day_log = archiver
        .ledger()
        .reconcile("o2", day())
        .await
        .unwrap()
        .unwrap();
    // The demo day's other held copies (a number nothing maps, a call over the limit) stay.
    assert!(
        day_log
            .held_copies
            .iter()
            .all(|h| h.mailbox.as_deref() != Some("priya.patel@contoso.com")),
        "{:?}",
        day_log.held_copies
    );
    assert_eq!(day_log.imported, o2.imported + 1);
    assert!(day_log.adds_up());
    let runs = archiver.ledger().run_logs("o2", day()).await.unwrap();
    assert_eq!(runs.len(), 3, "the day's run and two re-drives");
    let delivered = |r: &comms_archiver::report::StatusLog| -> Vec<String> {
        r.redriven
            .iter()
            .flat_map(|d| d.delivered.clone())
            .collect()
    };
    assert_eq!(delivered(&runs[1]), ["priya.patel@contoso.com"]);
    assert!(
        delivered(&runs[2]).is_empty(),
        "the second re-drive delivers nothing again"
    );
    assert!(kept.starts_with("held/o2/"), "{kept}");
    server.abort();
}

/// Benchmark, not a check (run by `bench/run.sh`; figures in docs/performance.md): a generated
/// day from the partner simulator over HTTP into the fake Graph answering every request after
/// `GRAPH_BENCH_LATENCY_MS` (50). With four requests at once per mailbox, the day cannot end
/// sooner than its busiest mailbox's requests × latency / 4; the figure is how close it comes.
/// Prints one JSON line starting `graph-bench`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run by bench/run.sh"]
async fn bench_graph_throughput() {
    comms_archiver::install_crypto_provider();
    use comms_archiver_testkit::simulator::{Simulator, SimulatorConfig};
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let (items, mailboxes) = (
        env("GRAPH_BENCH_ITEMS", 2000),
        env("GRAPH_BENCH_MAILBOXES", 8),
    );
    let latency_ms = env("GRAPH_BENCH_LATENCY_MS", 50);
    let bench_day = NaiveDate::from_ymd_opt(2026, 11, 25).unwrap();

    let ws = workspace();
    let mut sim_config = SimulatorConfig::new(ws.path().join("fixtures"));
    sim_config.workload = Some(comms_archiver_testkit::workload::Workload {
        items,
        mailboxes,
        seed: 20261121,
    });
    let sim = Simulator::new(sim_config);
    let (sim_addr, sim_task) = sim.start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let names: Vec<String> = (0..mailboxes)
        .map(|k| format!("user{k}@contoso.com"))
        .collect();
    let graph = FakeGraph::new(&names.iter().map(String::as_str).collect::<Vec<_>>());
    graph.latency_ms.store(latency_ms, Ordering::SeqCst);
    let (port, server) = graph.start_apart(2).await;

    let text = generated_day_on_graph(ws.path(), sim_addr, port);
    let text = match std::env::var("GRAPH_BENCH_IN_FLIGHT") {
        Ok(n) => text.replace(
            "[archiver]\n",
            &format!("[archiver]\nmax_in_flight = {n}\n"),
        ),
        Err(_) => text,
    };
    let text = match std::env::var("GRAPH_BENCH_IN_FLIGHT_BYTES") {
        Ok(n) => text.replace(
            "[archiver]\n",
            &format!("[archiver]\nmax_in_flight_bytes = {n}\n"),
        ),
        Err(_) => text,
    };
    let text = match std::env::var("GRAPH_BENCH_SHARDS") {
        Ok(n) => text.replace(
            "[archiver]\n",
            &format!("[archiver]\ndelivery_shards = {n}\n"),
        ),
        Err(_) => text,
    };
    let config = Config::from_toml(Path::new("graph-bench.toml"), &text, &[]).unwrap();
    let archiver = Archiver::from_config(&config).unwrap();

    // Each connector's day is collected, then delivered; connectors side by side (as under
    // `run`) would overlap one connector's delivering with another's collecting, so the
    // share would measure collecting. One after another, each connector-day's delivering is
    // timed on its own: from its first request to Graph to its last answer, against the
    // floor of its own busiest mailbox.
    let started = std::time::Instant::now();
    let (mut imported, mut requests, mut floor, mut delivering) = (0u64, 0usize, 0.0, 0.0);
    let (mut most_at_once, mut busiest_all, mut busy_all) = (0, 0usize, 0.0);
    let mut per_connector = Vec::new();
    for connector in archiver.connectors() {
        graph.reset_counts();
        let log = archiver.run_day(connector, bench_day).await.unwrap();
        assert!(log.complete, "{}: {:?}", connector.name, log.failures);
        let served = graph.served();
        let (busiest_name, busiest) = served
            .iter()
            .max_by_key(|(_, n)| **n)
            .map(|(name, n)| (name.clone(), *n))
            .unwrap_or_default();
        let span = graph.span().as_secs_f64();
        let floor_c = busiest as f64 * latency_ms as f64 / 1000.0 / 4.0;
        let busy = graph.busy().get(&busiest_name).copied().unwrap_or_default();
        let spans = graph.spans();
        let (busiest_from, busiest_to) = spans.get(&busiest_name).copied().unwrap_or_default();
        imported += log.imported;
        requests += served.values().sum::<usize>();
        floor += floor_c;
        delivering += span;
        most_at_once = most_at_once.max(graph.max_in_flight());
        busiest_all += busiest;
        busy_all += busy.as_secs_f64();
        per_connector.push(serde_json::json!({
            "connector": connector.name, "imported": log.imported,
            "requests": served.values().sum::<usize>(), "busiest_mailbox_requests": busiest,
            "floor_s": floor_c, "delivering_s": span,
            "busiest_from_s": busiest_from.as_secs_f64(), "busiest_to_s": busiest_to.as_secs_f64(),
        }));
    }
    let wall = started.elapsed().as_secs_f64();
    assert_eq!(
        graph.messages().len() as u64,
        imported,
        "no draft left, nothing twice"
    );
    println!(
        "graph-bench {}",
        serde_json::json!({
            "items": items, "mailboxes": mailboxes, "latency_ms": latency_ms,
            "max_in_flight": config.max_in_flight(),
            "max_in_flight_bytes": config.archiver.max_in_flight_bytes, "imported": imported,
            "requests": requests, "requests_per_message": requests as f64 / imported as f64,
            "busiest_mailbox_requests": busiest_all, "wall_s": wall,
            "messages_per_s": imported as f64 / wall,
            "floor_s": floor, "delivering_s": delivering, "of_allowed": floor / delivering,
            "of_allowed_whole_day": floor / wall,
            "most_at_once": most_at_once, "throttled": graph.throttled.load(Ordering::SeqCst),
            "busiest_mailbox_ms_per_request": busy_all * 1000.0 / busiest_all.max(1) as f64,
            "busiest_mailbox_occupancy": busy_all / 4.0 / delivering,
            "connectors": per_connector,
        })
    );
    drop(server);
    sim_task.abort();
}

/// config/demo-https.toml rooted in `dir`, reading the partner simulator at `sim` (without
/// overlap) and importing into its Maildir; its secret in a file.
pub fn generated_day(dir: &Path, sim: std::net::SocketAddr) -> String {
    let d = dir.display().to_string();
    std::fs::write(dir.join("sim-secret"), "simulator").unwrap();
    let text = std::fs::read_to_string(dir.join("config/demo-https.toml"))
        .unwrap()
        .replace("\"var/https/", "\"var/")
        .replace("127.0.0.1:18080", &sim.to_string())
        .replace(
            "allow_http_loopback = true",
            "allow_http_loopback = true\noverlap_hours = 0",
        )
        .replace(
            "{ env = \"COMMS_ARCHIVER_SIM_SECRET\" }",
            &format!("{{ file = \"{d}/sim-secret\" }}"),
        )
        .replace("\"config/", &format!("\"{d}/config/"))
        .replace("\"var/stage\"", &format!("\"{d}/var/stage\""))
        .replace("\"var/mail\"", &format!("\"{d}/var/mail\""));
    assert!(text.contains("overlap_hours = 0") && text.contains("kind = \"maildir\""));
    text
}

/// [`generated_day`] importing through the fake Graph on `graph_port`; its secrets in files.
pub fn generated_day_on_graph(dir: &Path, sim: std::net::SocketAddr, graph_port: u16) -> String {
    on_graph(&generated_day(dir, sim), dir, graph_port)
}

//! Logging set-up and the events the pipeline emits.
//!
//! One structured event per item outcome (target `comms_archiver::item`), carrying connector,
//! day, item key, item id, mailbox and outcome, so a log shipper can rebuild any status log.
//! The same `emit` bumps the matching metric, so logs and metrics never disagree.
//!
//! The optional HTTP endpoint serves `/healthz`, `/readyz` and `/metrics` (Prometheus text).

use crate::report::Reason;
use chrono::{DateTime, NaiveDate, Utc};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Readable lines for a terminal.
    Human,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Installs the global subscriber: `RUST_LOG` filters (default `info`), output to stderr.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}

/// What happened to one copy of an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Imported,
    SkippedDuplicate,
    Failed(Reason),
}

/// The per-item outcome event.
#[derive(Debug)]
pub struct ItemOutcome<'a> {
    pub connector: &'a str,
    pub day: NaiveDate,
    pub item_key: &'a str,
    pub item_id: &'a str,
    pub mailbox: Option<&'a str>,
    pub outcome: Outcome,
    pub detail: &'a str,
}

impl ItemOutcome<'_> {
    /// Writes the event (info for imports and skips, warn for failures) and counts it in
    /// `comms_archiver_items_total{connector, outcome, reason}`.
    pub fn emit(&self) {
        let (outcome, reason) = match self.outcome {
            Outcome::Imported => ("imported", ""),
            Outcome::SkippedDuplicate => ("skipped_duplicate", ""),
            Outcome::Failed(reason) => ("failed", reason.as_str()),
        };
        metrics::counter!("comms_archiver_items_total",
            "connector" => self.connector.to_string(), "outcome" => outcome, "reason" => reason)
        .increment(1);
        let day = self.day.to_string();
        let mailbox = self.mailbox.unwrap_or("");
        match self.outcome {
            Outcome::Imported | Outcome::SkippedDuplicate => tracing::info!(
                target: "comms_archiver::item",
                connector = self.connector,
                day = %day,
                item_key = self.item_key,
                item_id = self.item_id,
                mailbox,
                outcome,
                detail = self.detail,
                "item outcome"
            ),
            Outcome::Failed(_) => tracing::warn!(
                target: "comms_archiver::item",
                connector = self.connector,
                day = %day,
                item_key = self.item_key,
                item_id = self.item_id,
                mailbox,
                outcome,
                reason,
                detail = self.detail,
                "item outcome"
            ),
        }
    }
}

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics_handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // Another recorder may exist already (a host program's); ours then stays empty.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// What `/readyz` reports: whether the daemon has run, and how its last run ended.
#[derive(Debug, Default)]
pub struct RunState {
    last: Mutex<LastRun>,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
struct LastRun {
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    all_complete: Option<bool>,
    error: Option<String>,
}

impl RunState {
    pub fn started(&self, at: DateTime<Utc>) {
        let mut last = self.last.lock().expect("not poisoned");
        last.started_at = Some(at);
    }

    pub fn finished(&self, at: DateTime<Utc>, outcome: &crate::Result<bool>) {
        let mut last = self.last.lock().expect("not poisoned");
        last.finished_at = Some(at);
        match outcome {
            Ok(complete) => {
                last.all_complete = Some(*complete);
                last.error = None;
            }
            Err(e) => {
                last.all_complete = Some(false);
                last.error = Some(e.to_string());
            }
        }
    }

    /// 200 unless the last run failed outright (the stage could not be written, ...).
    fn readiness(&self) -> (u16, String) {
        let last = self.last.lock().expect("not poisoned").clone();
        let status = if last.error.is_some() { 503 } else { 200 };
        let body = serde_json::json!({
            "configuration": "loaded",
            "last_run": last,
        });
        (status, body.to_string())
    }
}

/// Serves `/healthz`, `/readyz` and `/metrics` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, state: Arc<RunState>) {
    let metrics = metrics_handle();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let _ = answer(stream, &state, metrics).await;
        });
    }
}

/// Binds the endpoint; errors say which address could not be used.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen on {addr} (telemetry.listen): {e}"),
        )
    })
}

async fn answer(
    mut stream: TcpStream,
    state: &RunState,
    metrics: &PrometheusHandle,
) -> std::io::Result<()> {
    // One small GET per connection: read the request head, at most 8 KiB.
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut buf))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let mut words = line.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        ("GET" | "HEAD", "/healthz") => (200, "text/plain", "ok\n".to_string()),
        ("GET" | "HEAD", "/readyz") => {
            let (status, body) = state.readiness();
            (status, "application/json", body)
        }
        ("GET" | "HEAD", "/metrics") => {
            metrics.run_upkeep();
            (200, "text/plain; version=0.0.4", metrics.render())
        }
        ("GET" | "HEAD", _) => (404, "text/plain", "not found\n".to_string()),
        _ => (405, "text/plain", "method not allowed\n".to_string()),
    };
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let mut response = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if method != "HEAD" {
        response.extend_from_slice(body.as_bytes());
    }
    stream.write_all(&response).await?;
    stream.shutdown().await
}

/// GETs `path` from the endpoint at `addr`; returns the status code and body.
pub async fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP response")
        })?;
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |x| x.1)
        .to_string();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn endpoint_answers_health_readiness_and_metrics() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(RunState::default());
        metrics_handle();
        let server = tokio::spawn(serve(listener, state.clone()));
        metrics::counter!("comms_archiver_test_total").increment(3);

        assert_eq!(
            get(addr, "/healthz").await.unwrap(),
            (200, "ok\n".to_string())
        );
        let (status, body) = get(addr, "/readyz").await.unwrap();
        assert_eq!(status, 200);
        assert!(body.contains("\"configuration\":\"loaded\""), "{body}");
        state.finished(Utc::now(), &Err(crate::Error::State("stage down".into())));
        let (status, body) = get(addr, "/readyz").await.unwrap();
        assert_eq!(status, 503);
        assert!(body.contains("stage down"), "{body}");
        let (status, body) = get(addr, "/metrics").await.unwrap();
        assert_eq!(status, 200);
        assert!(body.contains("comms_archiver_test_total 3"), "{body}");
        assert_eq!(get(addr, "/nope").await.unwrap().0, 404);
        server.abort();
    }
}

//! Logging set-up and the events the pipeline emits.
//!
//! One structured event per item outcome (target `comms_archiver::item`), carrying connector,
//! day, item key, item id, mailbox and outcome, so a log shipper can rebuild any status log.
//! The same `emit` bumps the matching metric, so logs and metrics never disagree.
//!
//! The optional HTTP endpoint serves `/healthz`, `/readyz` and `/metrics` (Prometheus text).

use crate::http_server::{self, Request, Response};
use crate::report::Reason;
use chrono::{DateTime, NaiveDate, Utc};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

/// The `[telemetry]` section: the HTTP endpoint for health and metrics (off unless `listen`
/// is set).
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// e.g. "127.0.0.1:9464": serves /healthz, /readyz and /metrics.
    pub listen: Option<SocketAddr>,
    /// Allow a non-loopback `listen` address (a container scraped from outside).
    #[serde(default)]
    pub allow_remote: bool,
    /// A bearer token that `/status` (the last 30 days, with users' numbers and item ids)
    /// asks for. Unset: `/status` is served on a loopback `listen` address only.
    pub status_token: Option<crate::secret::SecretRef>,
}

impl TelemetryConfig {
    /// A remote address only when the admin says the network is trusted.
    pub fn validate(&self) -> Result<(), crate::checks::Invalid> {
        match self.listen {
            Some(addr) if !addr.ip().is_loopback() && !self.allow_remote => {
                Err(crate::checks::Invalid::new(
                    "listen",
                    format!(
                        "{addr} is not a loopback address; the endpoint has no authentication, \
                         so set telemetry.allow_remote = true only where the network is trusted"
                    ),
                ))
            }
            _ => Ok(()),
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Readable lines for a terminal.
    Human,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Libraries whose own log lines name what they were asked for: Azure's SDK logs a failed
/// request with its URL, and a staged copy's URL carries its mailbox and item key.
const NAMES_WHAT_IT_ASKS: &[&str] = &[
    "typespec_client_core",
    "azure_core",
    "azure_identity",
    "azure_storage_blob",
];

/// The filter for `verbosity` (0 info, below fewer lines, above more): those libraries say
/// only their warnings and errors unless more is asked for (debugging, the operator's
/// choice). A failed request is reported in the daemon's own words, with what the operator
/// needs, not once more by the SDK with its URL at every try.
pub fn default_filter(verbosity: i8) -> EnvFilter {
    let level = match verbosity {
        i8::MIN..=-2 => "error",
        -1 => "warn",
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let libraries = match verbosity {
        i8::MIN..=-2 => "error",
        -1 | 0 => "warn",
        _ => level,
    };
    let mut directives = level.to_string();
    for target in NAMES_WHAT_IT_ASKS {
        directives.push_str(&format!(",{target}={libraries}"));
    }
    EnvFilter::new(directives)
}

/// Installs the global subscriber: `RUST_LOG` filters when set, else [`default_filter`];
/// output to stderr.
pub fn init(format: LogFormat, verbosity: i8) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| default_filter(verbosity));
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
    /// Imported with some files left out (kept in the stage) to fit the size limit.
    PartiallyImported,
    SkippedDuplicate,
    /// Kept in the stage for a later delivery.
    Held(Reason),
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
            Outcome::PartiallyImported => ("partially_imported", ""),
            Outcome::SkippedDuplicate => ("skipped_duplicate", ""),
            Outcome::Held(reason) => ("held", reason.as_str()),
            Outcome::Failed(reason) => ("failed", reason.as_str()),
        };
        metrics::counter!("comms_archiver_items_total",
            "connector" => self.connector.to_string(), "outcome" => outcome, "reason" => reason)
        .increment(1);
        let day = self.day.to_string();
        let mailbox = self.mailbox.unwrap_or("");
        match self.outcome {
            Outcome::Imported | Outcome::PartiallyImported | Outcome::SkippedDuplicate => {
                tracing::info!(
                    target: "comms_archiver::item",
                    connector = self.connector,
                    day = %day,
                    item_key = self.item_key,
                    item_id = self.item_id,
                    mailbox,
                    outcome,
                    detail = self.detail,
                    "item outcome"
                )
            }
            Outcome::Held(_) | Outcome::Failed(_) => tracing::warn!(
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
pub async fn serve(listener: TcpListener, state: Arc<RunState>, status: Option<StatusPage>) {
    let metrics = metrics_handle();
    let loopback = listener.local_addr().is_ok_and(|a| a.ip().is_loopback());
    let status = status.map(Arc::new);
    let handler = move |request: Request| {
        let state = state.clone();
        let status = status.clone();
        async move {
            match (request.method.as_str(), request.path.as_str()) {
                ("GET" | "HEAD", "/status") => match status.as_deref() {
                    None => Response::text(404, "not found\n"),
                    Some(page) => page.answer(&request, loopback).await,
                },
                ("GET" | "HEAD", "/healthz") => Response::text(200, "ok\n"),
                ("GET" | "HEAD", "/readyz") => {
                    let (status, body) = state.readiness();
                    Response::new(status, "application/json", body)
                }
                ("GET" | "HEAD", "/metrics") => {
                    metrics.run_upkeep();
                    Response::new(200, "text/plain; version=0.0.4", metrics.render())
                }
                ("GET" | "HEAD", _) => Response::text(404, "not found\n"),
                _ => Response::text(405, "method not allowed\n"),
            }
        }
    };
    http_server::serve(listener, Arc::new(handler)).await
}

/// What `/status` shows: a page of the last days that names users, so it is served on a
/// loopback address, or to a request that carries the bearer token.
pub struct StatusPage {
    pub token: Option<crate::secret::Secret>,
    pub render: Box<
        dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = String> + Send>>
            + Send
            + Sync,
    >,
}

impl StatusPage {
    async fn answer(&self, request: &Request, loopback: bool) -> Response {
        let bearer = request
            .header("authorization")
            .and_then(|h| h.strip_prefix("Bearer "));
        match (&self.token, bearer) {
            (Some(token), Some(given)) if constant_time_eq(token.expose(), given) => {}
            (Some(_), _) => {
                return Response::text(
                    401,
                    "/status needs the bearer token (telemetry.status_token)\n",
                )
            }
            (None, _) if !loopback => {
                return Response::text(
                    404,
                    "/status names users: it is served on a loopback address, or with \
                     telemetry.status_token set\n",
                )
            }
            (None, _) => {}
        }
        Response::new(
            200,
            "text/html; charset=utf-8",
            (self.render)().await.into_bytes(),
        )
    }
}

/// Compares without a shortcut that would tell how much of a token was right.
fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Binds the endpoint; errors say which address could not be used.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    http_server::bind(addr, "telemetry.listen").await
}

/// GETs `path` from the endpoint at `addr`; returns the status code and body.
pub async fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    http_server::get(addr, path).await
}

/// Log lines kept in memory for a test to read: a writer for a subscriber set for the test.
#[cfg(test)]
#[derive(Clone, Default)]
pub(crate) struct Lines(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

#[cfg(test)]
impl Lines {
    /// What was written so far.
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// A JSON subscriber writing here under the daemon's default filter at `verbosity`.
    pub(crate) fn subscriber(&self, verbosity: i8) -> impl tracing::Subscriber + Send + Sync {
        let writer = self.clone();
        tracing_subscriber::fmt()
            .with_env_filter(default_filter(verbosity))
            .with_writer(move || writer.clone())
            .json()
            .finish()
    }
}

#[cfg(test)]
impl std::io::Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_status_page_names_users_only_to_loopback_or_the_token() {
        let page = |token: Option<&str>| StatusPage {
            token: token.map(crate::secret::Secret::from_value),
            render: Box::new(|| Box::pin(async { "<html>alice</html>".to_string() })),
        };
        let request = |bearer: Option<&str>| Request {
            method: "GET".into(),
            path: "/status".into(),
            query: Default::default(),
            headers: bearer
                .map(|b| ("authorization".to_string(), format!("Bearer {b}")))
                .into_iter()
                .collect(),
            body: Vec::new(),
        };
        let status = |r: Response| r.status;
        assert_eq!(status(page(None).answer(&request(None), true).await), 200);
        assert_eq!(status(page(None).answer(&request(None), false).await), 404);
        let guarded = page(Some("s3cret-token"));
        assert_eq!(status(guarded.answer(&request(None), true).await), 401);
        assert_eq!(
            status(guarded.answer(&request(Some("s3cret-tokem")), false).await),
            401
        );
        assert_eq!(
            status(guarded.answer(&request(Some("s3cret-token")), false).await),
            200
        );
    }

    #[tokio::test]
    async fn endpoint_answers_health_readiness_and_metrics() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(RunState::default());
        metrics_handle();
        let server = tokio::spawn(serve(listener, state.clone(), None));
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

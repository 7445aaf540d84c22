//! The Graph client: at most [`CONCURRENCY_PER_MAILBOX`] requests at once per mailbox, paced
//! under Exchange's 10,000 requests per mailbox per 10 minutes and its limit on what is
//! uploaded to a mailbox (150 MB per 5 minutes unless configured), each retried by the one
//! policy ([`crate::retry`]) after Retry-After when Graph sends one, with the token renewed
//! once when it is refused.

use super::{GraphMailboxes, GraphSettings, CONCURRENCY_PER_MAILBOX};
use crate::events::Retry;
use crate::mailbox::{MailboxError, Paced};
use crate::retry::{Http, Policy, RetrySettings, Verdict};
use reqwest::header::{AUTHORIZATION, CONTENT_RANGE, CONTENT_TYPE};
use reqwest::{Method, StatusCode, Url};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, Notify, Semaphore};

/// Exchange allows an app 10,000 requests to a mailbox in any 10 minutes. A token bucket of
/// 4,500 refilled at 4,500 per 10 minutes stays under that, and lets a day's requests to a
/// mailbox (far fewer) run at the speed the 4 concurrent requests allow.
const REQUESTS: Limit = Limit {
    most: 10_000,
    window: Duration::from_secs(600),
};

/// The share of a limit the client paces under. The rest is for requests that reach Exchange
/// later than they were sent: one held up on its way lands in a later window, next to those
/// sent after it. Within 90% as sent, a window as received stays within the limit while no
/// request is held up longer than a fifth of the window (a minute of the 5-minute upload
/// window).
const PACED_SHARE: f64 = 0.9;

/// What Exchange lets an app send one mailbox in any `window`: requests, or bytes uploaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub most: u64,
    pub window: Duration,
}

/// What a mailbox may still be sent now, refilled with time: a bucket of [`PACED_SHARE`] of
/// the limit, half of it at once and half refilled over each window, so that no window of
/// what is sent holds more than that share of the limit (what is in the bucket at its start
/// plus what the window refills), while a day's first requests to a mailbox run at the speed
/// the 4 concurrent requests allow.
struct Bucket {
    tokens: f64,
    size: f64,
    refill_per_sec: f64,
    at: Instant,
}

impl Bucket {
    fn full(limit: Limit) -> Self {
        let size = limit.most as f64 * PACED_SHARE / 2.0;
        Bucket {
            tokens: size,
            size,
            refill_per_sec: size / limit.window.as_secs_f64().max(0.001),
            at: Instant::now(),
        }
    }

    /// What the bucket holds now (less than nothing while requests wait for their tokens).
    fn holds(&mut self) -> f64 {
        let now = Instant::now();
        let earned = now.saturating_duration_since(self.at).as_secs_f64() * self.refill_per_sec;
        self.tokens = (self.tokens + earned).min(self.size);
        self.at = now;
        self.tokens
    }

    /// How long until the bucket holds `n` tokens.
    fn until(&mut self, n: f64) -> Duration {
        let short = n - self.holds();
        Duration::from_secs_f64(short.max(0.0) / self.refill_per_sec)
    }

    /// Takes `n` tokens; how long to wait first when the bucket holds fewer.
    fn take(&mut self, n: u64) -> Duration {
        self.holds();
        self.tokens -= n as f64;
        self.until(0.0)
    }
}

/// A mailbox's two budgets: requests, and bytes uploaded (the bodies of POST, PUT and PATCH);
/// and the upload room kept for copies about to be imported ([`GraphMailboxes::keep_uploads`]).
struct Pace {
    requests: Bucket,
    uploads: Bucket,
    kept: u64,
}

impl Pace {
    /// Takes one request, with `upload` bytes, `drawn` of them from the room kept for its
    /// copy; how long to wait before sending it.
    fn take(&mut self, upload: u64, drawn: u64) -> Duration {
        self.kept -= drawn.min(self.kept);
        let request = self.requests.take(1);
        if upload == 0 {
            return request;
        }
        request.max(self.uploads.take(upload))
    }

    /// Keeps `bytes` of upload room for a copy when the bucket holds them on top of the room
    /// kept for others; else how long until it does (a copy larger than the bucket waits for
    /// a full one with nothing kept for others).
    fn keep(&mut self, bytes: u64) -> Result<(), Duration> {
        let need = match self.kept {
            0 => (bytes as f64).min(self.uploads.size),
            kept => (kept + bytes) as f64,
        };
        match self.uploads.until(need) {
            wait if wait.is_zero() => {
                self.kept += bytes;
                Ok(())
            }
            wait => Err(wait),
        }
    }
}

/// What the client keeps per mailbox: its concurrency, its paces, its folders.
pub(super) struct MailboxState {
    permits: Arc<Semaphore>,
    pace: std::sync::Mutex<Pace>,
    /// Copies waiting for upload room take turns, in the order they came.
    turns: Mutex<()>,
    /// Upload room kept for a copy was let go.
    let_go: Notify,
    pub(super) folders: Mutex<HashMap<String, String>>,
}

/// An answer that did not succeed.
pub(super) struct Refusal {
    pub(super) status: StatusCode,
    pub(super) code: String,
    pub(super) message: String,
}

pub(super) enum CallError {
    Refused(Refusal),
    Transport(String),
    /// Graph said the request succeeded, but its answer cannot be read: what the request made
    /// is unknown, so it is not sent again here (a second POST would make a second message).
    Unusable(String),
    /// A request that makes something was sent and no answer came (a timeout, a connection
    /// lost, a gateway's 502 or 504): it may have been made, so it is not sent again blindly.
    Unanswered(String),
}

impl GraphMailboxes {
    pub fn new(settings: GraphSettings) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .build()
            .map_err(|e| format!("cannot build the HTTPS client: {e}"))?;
        let mut settings = settings;
        if !settings.base.path().ends_with('/') {
            let path = format!("{}/", settings.base.path());
            settings.base.set_path(&path);
        }
        Ok(GraphMailboxes {
            settings,
            http,
            mailboxes: Mutex::new(HashMap::new()),
        })
    }

    pub(super) async fn state(&self, mailbox: &str) -> Arc<MailboxState> {
        self.mailboxes
            .lock()
            .await
            .entry(mailbox.to_string())
            .or_insert_with(|| {
                Arc::new(MailboxState {
                    permits: Arc::new(Semaphore::new(CONCURRENCY_PER_MAILBOX)),
                    pace: std::sync::Mutex::new(Pace {
                        requests: Bucket::full(REQUESTS),
                        uploads: Bucket::full(self.settings.uploads),
                        kept: 0,
                    }),
                    turns: Mutex::new(()),
                    let_go: Notify::new(),
                    folders: Mutex::new(HashMap::new()),
                })
            })
            .clone()
    }

    /// Waits until `bytes` more may be uploaded to `mailbox` without waiting for its pace,
    /// on top of the room kept for its other copies, and keeps that room for one copy.
    pub(super) async fn keep_uploads(&self, mailbox: &str, bytes: u64) -> Paced {
        let state = self.state(mailbox).await;
        let turn = state.turns.lock().await;
        loop {
            let let_go = state.let_go.notified();
            let kept = state.pace.lock().expect("never poisoned").keep(bytes);
            match kept {
                Ok(()) => break,
                // The room grows with time, and when another copy lets its room go.
                Err(wait) => tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = let_go => {}
                },
            }
        }
        drop(turn);
        Paced::kept(mailbox, bytes, move |left| {
            let mut pace = state.pace.lock().expect("never poisoned");
            pace.kept -= left.min(pace.kept);
            state.let_go.notify_waiters();
        })
    }

    pub(super) fn url(&self, path: &str) -> Url {
        self.settings.base.join(path).expect("paths are relative")
    }

    /// The URL of a list's next page, as an answer names it: only under the Graph base it
    /// came from, since the request carries the token.
    pub(super) fn next_page(&self, mailbox: &str, next: &str) -> Result<Url, MailboxError> {
        match Url::parse(next) {
            Ok(url) if url.as_str().starts_with(self.settings.base.as_str()) => Ok(url),
            _ => Err(MailboxError::Unavailable(format!(
                "Graph listing for {mailbox}: its next page is not under {} (the token is \
                 sent nowhere else)",
                self.settings.base
            ))),
        }
    }

    /// One request to a mailbox, within its concurrency and rate, with retries.
    pub(super) async fn call(
        &self,
        mailbox: &str,
        method: Method,
        url: Url,
        body: Option<(&'static str, bytes::Bytes)>,
        authorized: bool,
    ) -> Result<Value, CallError> {
        self.send(mailbox, method, url, body, authorized, None, true)
            .await
    }

    /// A POST that makes what is looked for afterwards, sent again only when it surely made
    /// nothing (refused, throttled, not connected): a lost answer is
    /// [`CallError::Unanswered`], for the caller to look for what it may have made.
    pub(super) async fn post_once(
        &self,
        mailbox: &str,
        url: Url,
        body: (&'static str, bytes::Bytes),
    ) -> Result<Value, CallError> {
        self.send(mailbox, Method::POST, url, Some(body), true, None, false)
            .await
    }

    /// One request, retried; with a Content-Range (an upload session's chunk) when given;
    /// `resent`: also when it may have taken effect.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn send(
        &self,
        mailbox: &str,
        method: Method,
        url: Url,
        body: Option<(&'static str, bytes::Bytes)>,
        authorized: bool,
        range: Option<&str>,
        resent: bool,
    ) -> Result<Value, CallError> {
        let state = self.state(mailbox).await;
        let mut renewed = false;
        let mut attempt = 0;
        let mut backoff = RetrySettings {
            max_retries: self.settings.max_retries,
            initial: Duration::from_millis(500),
            max_delay: Duration::from_secs(16),
        }
        .backoff();
        loop {
            let permit = state
                .permits
                .clone()
                .acquire_owned()
                .await
                .expect("never closed");
            let upload = match &body {
                Some((_, bytes))
                    if matches!(method, Method::POST | Method::PUT | Method::PATCH) =>
                {
                    bytes.len() as u64
                }
                _ => 0,
            };
            let drawn = Paced::draw(mailbox, upload);
            let wait = state
                .pace
                .lock()
                .expect("never poisoned")
                .take(upload, drawn);
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            let mut request = self.http.request(method.clone(), url.clone());
            if authorized {
                let token = self
                    .settings
                    .tokens
                    .token()
                    .await
                    .map_err(CallError::Transport)?;
                request = request.header(AUTHORIZATION, format!("Bearer {token}"));
            }
            if let Some((content_type, bytes)) = &body {
                request = request
                    .header(CONTENT_TYPE, *content_type)
                    .body(bytes.clone());
            }
            if let Some(range) = range {
                request = request.header(CONTENT_RANGE, range);
            }
            let sent = request.send().await;
            drop(permit);
            let (asked, why) = match sent {
                Err(e) if !resent && !e.is_connect() => {
                    return Err(CallError::Unanswered(format!(
                        "sent, but no answer came: {e}"
                    )))
                }
                Err(e) => (None, CallError::Transport(e.to_string())),
                Ok(response) => {
                    let status = response.status();
                    let verdict = Http.answer(status, response.headers());
                    if verdict == Verdict::Done {
                        return success(response).await;
                    }
                    if !resent && matches!(status.as_u16(), 502 | 504) {
                        return Err(CallError::Unanswered(format!(
                            "sent, and a gateway answered {status}"
                        )));
                    }
                    let bytes = response.bytes().await.unwrap_or_default();
                    let error: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                    let refusal = Refusal {
                        status,
                        code: error["error"]["code"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                        message: error["error"]["message"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                    };
                    match verdict {
                        Verdict::Reauthenticate if authorized && !renewed => {
                            self.settings.tokens.invalidate().await;
                            renewed = true;
                            continue;
                        }
                        Verdict::Retry(after) => (after, CallError::Refused(refusal)),
                        _ => return Err(CallError::Refused(refusal)),
                    }
                }
            };
            attempt += 1;
            let Some(wait) = backoff.next(asked) else {
                return Err(why);
            };
            let (what, detail) = match &why {
                CallError::Refused(r) => (
                    format!("Graph answered {}; retried", r.status),
                    format!("{mailbox}: {} {}", r.code, r.message),
                ),
                CallError::Transport(e) | CallError::Unusable(e) | CallError::Unanswered(e) => (
                    "Graph could not be reached; retried".to_string(),
                    format!("{mailbox}: {e}"),
                ),
            };
            Retry {
                side: "mailbox",
                kind: "graph_request",
                what,
                detail,
                scope: mailbox,
                attempt,
                wait,
            }
            .emit();
            tokio::time::sleep(wait).await;
        }
    }

    /// POSTs a JSON body.
    pub(super) async fn post_json(
        &self,
        mailbox: &str,
        url: Url,
        body: &Value,
    ) -> Result<Value, CallError> {
        let json = body.to_string().into_bytes().into();
        self.call(
            mailbox,
            Method::POST,
            url,
            Some(("application/json", json)),
            true,
        )
        .await
    }

    pub(super) fn error(&self, mailbox: &str, what: &str, e: CallError) -> MailboxError {
        match e {
            CallError::Refused(r)
                if r.status == StatusCode::NOT_FOUND
                    && matches!(
                        r.code.as_str(),
                        "ErrorInvalidUser" | "MailboxNotEnabledForRESTAPI" | "ResourceNotFound"
                    ) =>
            {
                MailboxError::NoSuchMailbox(mailbox.to_string())
            }
            CallError::Refused(r)
                if r.status == StatusCode::PAYLOAD_TOO_LARGE
                    || r.code == "ErrorMessageSizeExceeded" =>
            {
                MailboxError::Rejected {
                    mailbox: mailbox.to_string(),
                    reason: format!("{what}: {} {}", r.code, r.message),
                }
            }
            CallError::Refused(r) => MailboxError::Unavailable(format!(
                "Graph {what} for {mailbox}: {} {} {}",
                r.status.as_u16(),
                r.code,
                r.message
            )),
            CallError::Transport(why) => {
                MailboxError::Unavailable(format!("Graph {what} for {mailbox}: {why}"))
            }
            CallError::Unanswered(why) => MailboxError::Unavailable(format!(
                "Graph {what} for {mailbox}: {why}; whether it took effect is unknown, so the \
                 copy is looked for in its mailbox before it is imported again"
            )),
            CallError::Unusable(why) => MailboxError::Unavailable(format!(
                "Graph {what} for {mailbox}: {why}{}",
                super::UNKNOWN_EFFECT
            )),
        }
    }
}

/// A successful answer's JSON (null when it has no body, as a removal's 204). An answer that
/// cannot be read whole, or is not JSON, is [`CallError::Unusable`].
async fn success(response: reqwest::Response) -> Result<Value, CallError> {
    let status = response.status();
    let kind = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("no content type")
        .to_string();
    let bytes = response.bytes().await.map_err(|e| {
        CallError::Unusable(format!("answered {status}, then its answer broke off: {e}"))
    })?;
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&bytes).map_err(|_| {
        CallError::Unusable(format!(
            "answered {status} with {} bytes that are not JSON ({kind})",
            bytes.len()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn the_request_budget_allows_a_burst_then_the_documented_rate() {
        let mut bucket = Bucket::full(REQUESTS);
        for _ in 0..4_500 {
            assert_eq!(bucket.take(1), Duration::ZERO);
        }
        // Empty: the next request waits for one token, 0.133 s at 4,500 per 10 minutes.
        let wait = bucket.take(1).as_secs_f64();
        assert!((0.13..=0.14).contains(&wait), "{wait}");
    }

    #[test]
    fn room_is_kept_for_copies_on_top_of_each_other_and_drawn_by_their_requests() {
        let mb = 1_000_000;
        let mut pace = Pace {
            requests: Bucket::full(REQUESTS),
            // A bucket of 9 MB, refilled at 9 MB per 300 s (30 kB/s).
            uploads: Bucket::full(Limit {
                most: 20 * mb,
                window: Duration::from_secs(300),
            }),
            kept: 0,
        };
        let secs = |kept: Result<(), Duration>| kept.unwrap_err().as_secs_f64();
        assert_eq!(pace.keep(4 * mb), Ok(()));
        assert_eq!(pace.keep(4 * mb), Ok(()));
        // 8 MB kept: a third copy of 4 MB waits for 3 MB of refill, 100 s.
        let wait = secs(pace.keep(4 * mb));
        assert!((99.9..=100.0).contains(&wait), "{wait}");
        assert_eq!(pace.kept, 8 * mb);
        // The first copy's request sends 4.5 MB, 4 MB of them drawn from its room: it goes
        // at once, and 4 MB stay kept for the second copy.
        assert_eq!(pace.take(9 * mb / 2, 4 * mb), Duration::ZERO);
        assert_eq!(pace.kept, 4 * mb);
        // 4.5 MB left in the bucket, 4 MB of them the second copy's: a 1 MB copy waits for
        // 0.5 MB of refill (16.7 s).
        let wait = secs(pace.keep(mb));
        assert!((16.6..=16.7).contains(&wait), "{wait}");
        // With nothing kept, a copy larger than the bucket waits for a full one only.
        pace.kept = 0;
        let wait = secs(pace.keep(12 * mb));
        assert!((149.9..=150.0).contains(&wait), "{wait}");
    }

    #[test]
    fn uploads_are_paced_by_their_bytes_a_request_by_the_slower_budget() {
        let mb = 1_000_000;
        let mut pace = Pace {
            requests: Bucket::full(REQUESTS),
            uploads: Bucket::full(crate::mailbox::graph::DEFAULT_UPLOADS),
            kept: 0,
        };
        // 67.5 MB at once, 45% of 150 MB per 5 minutes; a GET needs no upload budget.
        for _ in 0..22 {
            assert_eq!(pace.take(3 * mb, 0), Duration::ZERO);
        }
        assert_eq!(pace.take(0, 0), Duration::ZERO);
        // Then 3 MB more, with 1.5 MB left, waits for 1.5 MB of refill (6.7 s at 67.5 MB per
        // 5 minutes), and the next for its own 3 MB after that (20 s).
        let wait = pace.take(3 * mb, 0).as_secs_f64();
        assert!((6.6..=6.7).contains(&wait), "{wait}");
        let wait = pace.take(3 * mb, 0).as_secs_f64();
        assert!((19.9..=20.1).contains(&wait), "{wait}");
    }
}

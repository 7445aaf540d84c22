//! The Graph client: at most [`CONCURRENCY_PER_MAILBOX`] requests at once per mailbox, paced
//! under Exchange's 10,000 requests per mailbox per 10 minutes, each retried by the one
//! policy ([`crate::retry`]) after Retry-After when Graph sends one, with the token renewed
//! once when it is refused.

use super::{GraphMailboxes, GraphSettings, CONCURRENCY_PER_MAILBOX};
use crate::events::Retry;
use crate::mailbox::MailboxError;
use crate::retry::{Http, Policy, RetrySettings, Verdict};
use reqwest::header::{AUTHORIZATION, CONTENT_RANGE, CONTENT_TYPE};
use reqwest::{Method, StatusCode, Url};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, Semaphore};

/// Exchange allows an app 10,000 requests to a mailbox in any 10 minutes. A token bucket of
/// 5,000 refilled at 5,000 per 10 minutes never exceeds that, and lets a day's requests to a
/// mailbox (far fewer) run at the speed the 4 concurrent requests allow.
const BUCKET: f64 = 5_000.0;
const REFILL_PER_SEC: f64 = 5_000.0 / 600.0;
// Any 10 minutes: at most the bucket plus what 10 minutes refill.
const _: () = assert!(BUCKET + REFILL_PER_SEC * 600.0 <= 10_000.0);

/// Requests a mailbox may still send now, refilled with time.
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full() -> Self {
        Bucket {
            tokens: BUCKET,
            at: Instant::now(),
        }
    }

    /// Takes one request's token; how long to wait first when the bucket is empty.
    fn take(&mut self) -> Duration {
        let now = Instant::now();
        let earned = now.saturating_duration_since(self.at).as_secs_f64() * REFILL_PER_SEC;
        self.tokens = (self.tokens + earned).min(BUCKET) - 1.0;
        self.at = now;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / REFILL_PER_SEC)
        }
    }
}

/// What the client keeps per mailbox: its concurrency, its request budget, its folders.
pub(super) struct MailboxState {
    permits: Arc<Semaphore>,
    budget: Mutex<Bucket>,
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
                    budget: Mutex::new(Bucket::full()),
                    folders: Mutex::new(HashMap::new()),
                })
            })
            .clone()
    }

    pub(super) fn url(&self, path: &str) -> Url {
        self.settings.base.join(path).expect("paths are relative")
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
        self.send(mailbox, method, url, body, authorized, None)
            .await
    }

    /// [`Self::call`] with a Content-Range (an upload session's chunk).
    pub(super) async fn send(
        &self,
        mailbox: &str,
        method: Method,
        url: Url,
        body: Option<(&'static str, bytes::Bytes)>,
        authorized: bool,
        range: Option<&str>,
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
            let wait = state.budget.lock().await.take();
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
                Err(e) => (None, CallError::Transport(e.to_string())),
                Ok(response) => {
                    let status = response.status();
                    let verdict = Http.answer(status, response.headers());
                    let bytes = response.bytes().await.unwrap_or_default();
                    if verdict == Verdict::Done {
                        return Ok(serde_json::from_slice(&bytes).unwrap_or(Value::Null));
                    }
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
                CallError::Transport(e) => (
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
        self.post_serialized(mailbox, url, body.to_string().into_bytes().into())
            .await
    }

    /// POSTs a JSON body serialized already.
    pub(super) async fn post_serialized(
        &self,
        mailbox: &str,
        url: Url,
        json: bytes::Bytes,
    ) -> Result<Value, CallError> {
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
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn the_request_budget_allows_a_burst_then_the_documented_rate() {
        let mut bucket = Bucket::full();
        for _ in 0..5_000 {
            assert_eq!(bucket.take(), Duration::ZERO);
        }
        // Empty: the next request waits for one token, 0.12 s at 5,000 per 10 minutes.
        let wait = bucket.take().as_secs_f64();
        assert!((0.10..=0.13).contains(&wait), "{wait}");
    }
}

//! App-only tokens (OAuth 2.0 client credentials) for Exchange Online IMAP and Microsoft
//! Graph: fetched once, shared by every mailbox, and refreshed five minutes before expiry.

use crate::events::Retry;
use crate::retry::{Http, Policy, RetrySettings, Verdict};
use crate::secret::Secret;
use serde::Deserialize;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// How the token endpoint is retried when it fails or throttles (its refusals are final).
const TOKEN_RETRIES: RetrySettings = RetrySettings {
    max_retries: 3,
    initial: Duration::from_millis(500),
    max_delay: Duration::from_secs(8),
};

/// A cached client-credentials token.
pub struct TokenSource {
    http: reqwest::Client,
    token_url: reqwest::Url,
    client_id: String,
    secret: Secret,
    scope: String,
    cached: Mutex<Option<(String, Instant)>>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default = "default_expiry")]
    expires_in: u64,
}

fn default_expiry() -> u64 {
    3599
}

impl TokenSource {
    pub fn new(
        token_url: reqwest::Url,
        client_id: &str,
        secret: Secret,
        scope: &str,
    ) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| format!("cannot build the HTTPS client: {e}"))?;
        Ok(TokenSource {
            http,
            token_url,
            client_id: client_id.to_string(),
            secret,
            scope: scope.to_string(),
            cached: Mutex::new(None),
        })
    }

    /// A valid token, fetched when there is none or it expires within five minutes.
    pub async fn token(&self) -> Result<String, String> {
        let mut cached = self.cached.lock().await;
        if let Some((token, good_until)) = cached.as_ref() {
            if Instant::now() < *good_until {
                return Ok(token.clone());
            }
        }
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "client_credentials")
            .append_pair("client_id", &self.client_id)
            .append_pair("client_secret", self.secret.expose())
            .append_pair("scope", &self.scope)
            .finish();
        let shown = format!(
            "{}{}",
            self.token_url.origin().ascii_serialization(),
            self.token_url.path()
        );
        let mut backoff = TOKEN_RETRIES.backoff();
        let mut attempt = 0;
        let bytes = loop {
            let sent = self
                .http
                .post(self.token_url.clone())
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(body.clone())
                .send()
                .await;
            let (asked, why) = match sent {
                Err(e) => (None, format!("could not be reached: {e}")),
                Ok(response) => {
                    let status = response.status();
                    let verdict = Http.answer(status, response.headers());
                    match verdict {
                        Verdict::Done => match response.bytes().await {
                            Ok(bytes) => break bytes,
                            Err(e) => (None, format!("the answer broke off: {e}")),
                        },
                        Verdict::Retry(after) => (after, format!("answered {status}")),
                        Verdict::Reauthenticate | Verdict::GiveUp => {
                            return Err(format!(
                                "token endpoint {shown} answered {status}: check the tenant, \
                                 client id and secret, and that the application has the \
                                 permission"
                            ))
                        }
                    }
                }
            };
            attempt += 1;
            let Some(wait) = backoff.next(asked) else {
                return Err(format!(
                    "token endpoint {shown} {why}, still after {} retries",
                    TOKEN_RETRIES.max_retries
                ));
            };
            Retry {
                side: "mailbox",
                kind: "token_request",
                what: format!(
                    "token endpoint {}; retried",
                    why.split(':').next().unwrap_or_default()
                ),
                detail: format!("{shown} {why}"),
                scope: &shown,
                attempt,
                wait,
            }
            .emit();
            tokio::time::sleep(wait).await;
        };
        let answer: TokenAnswer = serde_json::from_slice(&bytes)
            .map_err(|e| format!("token endpoint {shown} answered without a token: {e}"))?;
        let good_until =
            Instant::now() + Duration::from_secs(answer.expires_in.saturating_sub(300));
        *cached = Some((answer.access_token.clone(), good_until));
        Ok(answer.access_token)
    }

    /// Forgets the cached token (the server refused it).
    pub async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }
}

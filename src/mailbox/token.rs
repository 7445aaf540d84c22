//! App-only tokens (OAuth 2.0 client credentials) for Exchange Online IMAP and Microsoft
//! Graph: fetched once, shared by every mailbox, and refreshed five minutes before expiry.

use crate::secret::Secret;
use serde::Deserialize;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

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
        crate::install_crypto_provider();
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
        let response = self
            .http
            .post(self.token_url.clone())
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body)
            .send()
            .await
            .map_err(|e| format!("token endpoint {shown} could not be reached: {e}"))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| format!("token endpoint {shown}: {e}"))?;
        if !status.is_success() {
            return Err(format!(
                "token endpoint {shown} answered {status}: check the tenant, client id and secret, \
                 and that the application has the permission"
            ));
        }
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

//! The HTTPS pull transport: authenticate, page through the day's window (plus an overlap
//! for late arrivals; deduplication makes it safe), fetch media, and retry what is worth
//! retrying. Each partner's records are parsed by the same [`RecordFormat`] as its export
//! drop. Contracts: `docs/partners/*.md`.
//!
//! Retries follow one policy ([`verdict`]): 5xx, 408, timeouts and broken pages are retried
//! with exponential backoff and jitter; 429 and 503 wait for Retry-After; 401 renews the
//! token once (tokens expire mid-run); 403 and a second 401 end the day with an error that
//! names the connector. A page that still cannot be read ends the day, which the next wake
//! retries; the items before it are kept, none after it is skipped.

mod sl2;

pub use sl2::Sl2Access;

use super::{ItemStream, MediaRef, Pulled, RecordFormat, Source, SourceError, Wire};
use crate::events::Retry;
use crate::item::Attachment;
use crate::retry::{Http, Policy, RetrySettings, Verdict};
use crate::secret::Secret;
use async_trait::async_trait;
use base64::Engine;
use chrono::{DateTime, Duration, NaiveDate, SecondsFormat, Utc};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use reqwest::{StatusCode, Url};
use serde::Deserialize;
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::Mutex;

/// How a partner's API is authenticated.
#[derive(Clone)]
pub enum Auth {
    /// TeleMessage: username and password exchanged for a session token (`auth/login`).
    Session { username: String, password: Secret },
    /// CellTrust SL2: client credentials exchanged for a bearer token (`oauth/token`).
    ClientCredentials { client_id: String, secret: Secret },
    /// Veritas Merge1: a static key in the `X-Api-Key` header.
    ApiKey { key: Secret },
}

/// Retry and paging settings.
#[derive(Debug, Clone)]
pub struct HttpsSettings {
    pub page_size: u32,
    pub overlap: Duration,
    pub timeout: std::time::Duration,
    pub max_retries: usize,
    pub retry_initial: std::time::Duration,
    /// The largest page answer read; a longer one is an error of the day.
    pub max_page_bytes: u64,
    /// What one item may weigh: a media download stops past what is left of it.
    pub max_item_bytes: u64,
}

/// An answer's body, read only while it stays within `cap` bytes, whatever Content-Length
/// says or does not say; Err holds how much was seen (at least `cap + 1`) and whether that is
/// the length declared.
async fn read_capped(
    mut response: reqwest::Response,
    cap: u64,
) -> Result<Result<Vec<u8>, (u64, bool)>, reqwest::Error> {
    if let Some(declared) = response.content_length().filter(|&n| n > cap) {
        return Ok(Err((declared, true)));
    }
    // The room of what is read is taken first: all of it when the length is declared, else
    // chunk by chunk.
    let declared = response.content_length();
    if let Some(declared) = declared {
        crate::pipeline::budget::before_reading(declared).await;
    }
    let mut body = Vec::with_capacity(declared.unwrap_or(0) as usize);
    while let Some(chunk) = response.chunk().await? {
        if (body.len() + chunk.len()) as u64 > cap {
            return Ok(Err(((body.len() + chunk.len()) as u64, false)));
        }
        if declared.is_none() {
            crate::pipeline::budget::before_reading(chunk.len() as u64).await;
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Ok(body))
}

/// An authenticated client for one connector's partner API.
pub struct PartnerClient {
    connector: String,
    base: Url,
    http: reqwest::Client,
    auth: Auth,
    token: Mutex<Option<String>>,
    settings: HttpsSettings,
}

impl PartnerClient {
    pub fn new(
        connector: &str,
        base: Url,
        auth: Auth,
        settings: HttpsSettings,
    ) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .user_agent(concat!("comms-archiver/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTPS client: {e}"))?;
        // A base without a trailing slash would lose its last segment in joins.
        let mut base = base;
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        Ok(PartnerClient {
            connector: connector.to_string(),
            base,
            http,
            auth,
            token: Mutex::new(None),
            settings,
        })
    }

    fn url(&self, path: &str) -> Result<Url, SourceError> {
        self.base.join(path.trim_start_matches('/')).map_err(|e| {
            SourceError::Unavailable(format!(
                "connector {}: bad path '{path}': {e}",
                self.connector
            ))
        })
    }

    /// The base URL for messages (never with credentials; ours carry none).
    pub fn describe(&self) -> String {
        format!("HTTPS {}", self.base)
    }

    async fn login(&self) -> Result<Option<String>, SourceError> {
        let (path, body) = match &self.auth {
            Auth::ApiKey { .. } => return Ok(None),
            Auth::Session { username, password } => (
                "auth/login",
                serde_json::json!({ "username": username, "password": password.expose() }),
            ),
            Auth::ClientCredentials { client_id, secret } => (
                "oauth/token",
                serde_json::json!({
                    "grant_type": "client_credentials",
                    "client_id": client_id,
                    "client_secret": secret.expose(),
                }),
            ),
        };
        let url = self.url(path)?;
        let bytes = self
            .send(
                || {
                    self.http
                        .post(url.clone())
                        .header(CONTENT_TYPE, "application/json")
                        .body(body.to_string())
                },
                &url,
                false,
                self.settings.max_page_bytes,
            )
            .await?;
        #[derive(Deserialize)]
        struct Token {
            #[serde(alias = "access_token")]
            token: String,
        }
        let token: Token = serde_json::from_slice(&bytes).map_err(|e| {
            SourceError::Unavailable(format!(
                "connector {}: the login answer of {url} has no token: {e}",
                self.connector
            ))
        })?;
        Ok(Some(token.token))
    }

    async fn authorize(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::RequestBuilder, SourceError> {
        if let Auth::ApiKey { key } = &self.auth {
            return Ok(request.header("X-Api-Key", key.expose()));
        }
        let mut token = self.token.lock().await;
        if token.is_none() {
            *token = self.login().await?;
        }
        Ok(match token.as_deref() {
            Some(t) => request.header(AUTHORIZATION, format!("Bearer {t}")),
            None => request,
        })
    }

    /// GETs a path or URL relative to the base, authenticated, with retries.
    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Vec<u8>, SourceError> {
        let mut url = self.url(path)?;
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        let cap = self.settings.max_page_bytes;
        match self
            .send(|| self.http.get(url.clone()), &url, true, cap)
            .await
        {
            Err(SourceError::TooLarge(seen)) => Err(SourceError::Unavailable(format!(
                "connector {}: {}{} answered with {seen}, more than the bound of {cap} bytes \
                 for one answer (source.max_page_bytes); it was not read on, and the day stays \
                 open",
                self.connector,
                url.origin().ascii_serialization(),
                url.path()
            ))),
            other => other,
        }
    }

    /// GETs a file of an item, reading at most `left` bytes of it: a longer one is
    /// `SourceError::TooLarge`, stopped as soon as it passes the bound.
    pub async fn get_media(&self, path: &str, left: u64) -> Result<Vec<u8>, SourceError> {
        let url = self.url(path)?;
        self.send(|| self.http.get(url.clone()), &url, true, left)
            .await
            .map_err(|e| match e {
                SourceError::TooLarge(seen) => SourceError::TooLarge(format!(
                    "the file is {seen}, so the item exceeds the limit of {} bytes; it was not \
                     read",
                    self.settings.max_item_bytes
                )),
                other => other,
            })
    }

    /// Sends with the retry policy. `authorized` requests carry the token or key and renew
    /// an expired token once.
    async fn send(
        &self,
        build: impl Fn() -> reqwest::RequestBuilder,
        url: &Url,
        authorized: bool,
        cap: u64,
    ) -> Result<Vec<u8>, SourceError> {
        let mut backoff = self.retry_settings().backoff();
        let mut renewed = false;
        let mut attempt = 0;
        let shown = format!("{}{}", url.origin().ascii_serialization(), url.path());
        loop {
            let request = if authorized {
                Box::pin(self.authorize(build())).await?
            } else {
                build()
            };
            let (why, asked) = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    match Http.answer(status, response.headers()) {
                        Verdict::Done => match read_capped(response, cap).await {
                            Ok(Ok(bytes)) => return Ok(bytes),
                            Ok(Err((seen, declared))) => {
                                let more = if declared { "" } else { " or more" };
                                return Err(SourceError::TooLarge(format!("{seen} bytes{more}")));
                            }
                            Err(e) => (format!("the answer broke off: {e}"), None),
                        },
                        Verdict::Reauthenticate
                            if authorized
                                && !renewed
                                && !matches!(self.auth, Auth::ApiKey { .. }) =>
                        {
                            tracing::info!(connector = %self.connector, "the partner token expired; signing in again");
                            *self.token.lock().await = None;
                            renewed = true;
                            continue;
                        }
                        Verdict::Reauthenticate => {
                            return Err(SourceError::Denied(format!(
                                "connector {}: {shown} refused the credentials (401); check the \
                                 connector's username, password, client secret or API key",
                                self.connector
                            )))
                        }
                        Verdict::GiveUp if status == StatusCode::FORBIDDEN => {
                            return Err(SourceError::Denied(format!(
                                "connector {}: {shown} refused access (403); the partner account \
                                 lacks the permission for this",
                                self.connector
                            )))
                        }
                        Verdict::GiveUp => {
                            return Err(SourceError::Unavailable(format!(
                                "connector {}: {shown} answered {status}",
                                self.connector
                            )))
                        }
                        Verdict::Retry(after) => (format!("answered {status}"), after),
                    }
                }
                Err(e) if e.is_timeout() => ("timed out".to_string(), None),
                Err(e) => (format!("could not be reached: {e}"), None),
            };
            attempt += 1;
            let Some(wait) = backoff.next(asked) else {
                return Err(SourceError::Unavailable(format!(
                    "connector {}: {shown} {why}, still after {} retries; the day stays open",
                    self.connector, self.settings.max_retries
                )));
            };
            Retry {
                side: "partner",
                kind: "partner_request",
                what: format!("{}; retried", retry_kind(&why)),
                detail: format!("{shown} {why}"),
                scope: &self.connector,
                attempt,
                wait,
            }
            .emit();
            tokio::time::sleep(wait).await;
        }
    }

    /// The client's retries, as configured.
    fn retry_settings(&self) -> RetrySettings {
        RetrySettings {
            max_retries: self.settings.max_retries,
            initial: self.settings.retry_initial,
            max_delay: std::time::Duration::from_secs(60),
        }
    }
}

/// The kind of a retried failure, without the parts that differ each time.
fn retry_kind(why: &str) -> &str {
    match why.find(':') {
        Some(i) => &why[..i],
        None => why,
    }
}

/// A partner API, seen as a source.
pub struct HttpsSource<F: RecordFormat> {
    client: Arc<PartnerClient>,
    feed: String,
    sl2: Option<Sl2Access>,
    format: Arc<F>,
}

impl<F: RecordFormat> HttpsSource<F> {
    /// A source reading one feed (e.g. `o2/items`), or the SL2 units when `sl2` is set.
    pub fn new(client: PartnerClient, feed: &str, sl2: Option<Sl2Access>, format: F) -> Self {
        HttpsSource {
            client: Arc::new(client),
            feed: feed.to_string(),
            sl2,
            format: Arc::new(format),
        }
    }
}

#[async_trait]
impl<F: RecordFormat> Source for HttpsSource<F> {
    async fn open(&self, day: NaiveDate) -> Result<Box<dyn ItemStream>, SourceError> {
        let feeds = match &self.sl2 {
            Some(access) => access.feeds(&self.client).await?,
            None => vec![self.feed.clone()],
        };
        let start = day.and_hms_opt(0, 0, 0).expect("midnight").and_utc();
        Ok(Box::new(HttpsStream {
            client: self.client.clone(),
            format: self.format.clone(),
            from: start - self.client.settings.overlap,
            to: start + Duration::days(1),
            feeds: feeds.into(),
            feed: None,
            page: VecDeque::new(),
            page_no: 0,
        }))
    }

    fn describe(&self) -> String {
        self.client.describe()
    }

    /// With `connect`: signs in and reads yesterday's first record (opening a day alone
    /// may ask the partner nothing yet).
    async fn check(&self, connect: bool) -> Result<String, SourceError> {
        if !connect {
            return Ok(format!(
                "{}: not contacted (check --connect signs in)",
                self.describe()
            ));
        }
        let yesterday = chrono::Utc::now()
            .date_naive()
            .pred_opt()
            .unwrap_or_default();
        let read = match self.open(yesterday).await {
            Ok(mut stream) => stream.next().await.map(|_| ()),
            Err(e) => Err(e),
        };
        match read {
            Ok(()) => Ok(format!("{}: signed in, {yesterday} read", self.describe())),
            Err(SourceError::NotReady(why)) => {
                Ok(format!("{}: signed in ({why})", self.describe()))
            }
            Err(e) => Err(e),
        }
    }
}

#[derive(Deserialize)]
struct Page {
    items: Vec<serde_json::Value>,
    #[serde(default)]
    next_cursor: Option<String>,
}

/// The next page of a feed.
enum Next {
    After(String),
    Done,
}

struct HttpsStream<F: RecordFormat> {
    client: Arc<PartnerClient>,
    format: Arc<F>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    feeds: VecDeque<String>,
    /// The feed being read and where it stands.
    feed: Option<(String, Next)>,
    page: VecDeque<(usize, serde_json::Value)>,
    page_no: usize,
}

impl<F: RecordFormat> HttpsStream<F> {
    /// Fetches the next page; false when every feed is read.
    async fn fill(&mut self) -> Result<bool, SourceError> {
        loop {
            let (feed, cursor) = match self.feed.take() {
                Some((feed, Next::After(cursor))) => (feed, Some(cursor)),
                Some((_, Next::Done)) | None => match self.feeds.pop_front() {
                    Some(feed) => {
                        self.page_no = 0;
                        (feed, None)
                    }
                    None => return Ok(false),
                },
            };
            let mut query = vec![
                ("from", self.from.to_rfc3339_opts(SecondsFormat::Secs, true)),
                ("to", self.to.to_rfc3339_opts(SecondsFormat::Secs, true)),
                ("limit", self.client.settings.page_size.to_string()),
            ];
            if let Some(c) = &cursor {
                query.push(("cursor", c.clone()));
            }
            self.page_no += 1;
            let page = self.read_page(&feed, &query).await?;
            self.page = page
                .items
                .into_iter()
                .enumerate()
                .map(|(i, v)| (i + 1, v))
                .collect();
            let next = match page.next_cursor.filter(|c| !c.is_empty()) {
                Some(cursor) => Next::After(cursor),
                None => Next::Done,
            };
            self.feed = Some((feed, next));
            if !self.page.is_empty() {
                return Ok(true);
            }
        }
    }

    /// One page; an unreadable page is asked for again within the retry budget.
    async fn read_page(&self, feed: &str, query: &[(&str, String)]) -> Result<Page, SourceError> {
        let mut backoff = self.client.retry_settings().backoff();
        let mut attempt = 0;
        loop {
            let bytes = self.client.get(feed, query).await?;
            let e = match serde_json::from_slice::<Page>(&bytes) {
                Ok(page) => return Ok(page),
                Err(e) => e,
            };
            attempt += 1;
            let Some(wait) = backoff.next(None) else {
                return Err(SourceError::Unavailable(format!(
                    "connector {}: page {} of {feed} cannot be read ({e}); the day stays open \
                     and is retried, no item after it was skipped",
                    self.client.connector, self.page_no
                )));
            };
            Retry {
                side: "partner",
                kind: "partner_page",
                what: "unreadable page; asked again".into(),
                detail: format!("{feed} page {}: {e}", self.page_no),
                scope: &self.client.connector,
                attempt,
                wait,
            }
            .emit();
            tokio::time::sleep(wait).await;
        }
    }

    fn record_bytes(value: serde_json::Value) -> Result<Vec<u8>, String> {
        match F::WIRE {
            Wire::Json => Ok(serde_json::to_vec(&value).expect("a JSON value serializes")),
            Wire::Mime => {
                let mime = value
                    .get("mime")
                    .and_then(|m| m.as_str())
                    .ok_or("the item has no 'mime' field")?;
                base64::engine::general_purpose::STANDARD
                    .decode(mime.trim())
                    .map_err(|e| format!("'mime' is not base64: {e}"))
            }
        }
    }
}

#[async_trait]
impl<F: RecordFormat> ItemStream for HttpsStream<F> {
    async fn next(&mut self) -> Result<Option<Pulled>, SourceError> {
        if self.page.is_empty() && !self.fill().await? {
            return Ok(None);
        }
        let (index, value) = self.page.pop_front().expect("filled");
        let feed = self.feed.as_ref().map(|(f, _)| f.as_str()).unwrap_or("");
        let location = format!("{feed} page {} item {index}", self.page_no);
        let bytes = match Self::record_bytes(value) {
            Ok(bytes) => bytes,
            Err(reason) => {
                return Ok(Some(Pulled::Invalid {
                    location,
                    partner_id: None,
                    reason,
                }))
            }
        };
        let client = &self.client;
        let fetch = |media: MediaRef, left: u64| async move {
            let data = client.get_media(&media.location, left).await?;
            Ok(Attachment {
                name: media.name,
                content_type: media.content_type,
                data,
            })
        };
        Ok(Some(
            super::pull(
                self.format.as_ref(),
                &bytes,
                location,
                self.client.settings.max_item_bytes,
                fetch,
            )
            .await?,
        ))
    }
}

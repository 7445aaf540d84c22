//! The stage in Azure Blob Storage, through Microsoft's official SDK (`azure_storage_blob`).
//!
//! Everything lives in one container: rendered messages, the ledger, checkpoints and status
//! logs, so the host running the daemon can be replaced at any time. Writes of messages and
//! ledger records are create-only (`If-None-Match: *`; 409 and 412 mean "already there");
//! day states, leases and checkpoints are written with ETag conditions. A blob is one
//! request up to 64 MiB, and in blocks beyond. Authentication: managed identity, workload
//! identity, a service principal's client secret, or a container SAS.
//!
//! Errors name the account and the container, never the SAS or a secret: the SAS is
//! scrubbed from every message.

use super::clock::{ClockPolicy, ClockWatch};
use super::{Created, Stage, StageError, Version};
use crate::secret::Secret;
use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use azure_core::error::ErrorKind;
use azure_core::http::{
    ClientOptions, ExponentialRetryOptions, RequestContent, RetryOptions, StatusCode,
};
use azure_storage_blob::models::{
    BlobClientGetPropertiesResultHeaders, BlobClientUploadOptions,
    BlobContainerClientListBlobsOptions,
};
use azure_storage_blob::{BlobContainerClient, BlobContainerClientOptions};
use bytes::Bytes;
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;

/// Blobs up to this size are uploaded in one request (Put Blob takes up to 256 MiB since
/// service version 2016-05-31, 5,000 MiB since 2019-12-12): every rendered message, and all
/// but the largest held items, which would otherwise go in 4 MiB blocks, each block a request
/// of its own and a commit after them. Larger blobs go in blocks of this size.
const ONE_REQUEST: std::num::NonZero<u64> = std::num::NonZero::new(64 * 1024 * 1024).unwrap();

/// How the stage authenticates to Azure Storage.
#[derive(Clone)]
pub enum AzureAuth {
    /// A container SAS token (or a full container SAS URL).
    Sas(Secret),
    /// An Entra ID credential: managed identity, workload identity or client secret.
    Token(Arc<dyn TokenCredential>),
}

/// A container in Azure Blob Storage.
pub struct AzureStage {
    container: BlobContainerClient,
    shown: String,
    sas: Option<Secret>,
    timeout: Duration,
    /// What the service's answers say of this host's clock.
    clock: Arc<ClockWatch>,
}

impl AzureStage {
    /// A stage in `container` at `endpoint` (e.g. `https://account.blob.core.windows.net`).
    pub fn new(
        endpoint: &str,
        container: &str,
        auth: AzureAuth,
        max_retries: u32,
        timeout: Duration,
    ) -> Result<AzureStage, String> {
        let account = endpoint
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or_default();
        let host = reqwest::Url::parse(endpoint)
            .map_err(|e| format!("stage endpoint '{endpoint}' is not a URL: {e}"))?;
        let shown = format!(
            "Azure storage {} container {container}",
            if host.path().len() > 1 {
                account.to_string()
            } else {
                host.host_str().unwrap_or_default().to_string()
            }
        );
        let clock = ClockWatch::new(&shown);
        let options = BlobContainerClientOptions {
            client_options: ClientOptions {
                per_try_policies: vec![Arc::new(ClockPolicy(clock.clone()))],
                retry: RetryOptions::exponential(ExponentialRetryOptions {
                    initial_delay: azure_core::time::Duration::milliseconds(200),
                    max_retries,
                    max_total_elapsed: azure_core::time::Duration::seconds(timeout.as_secs() as i64),
                    max_delay: azure_core::time::Duration::seconds(5),
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let (url, credential, sas) = match auth {
            AzureAuth::Sas(sas) => {
                let raw = sas.expose().trim();
                let url = if raw.starts_with("http://") || raw.starts_with("https://") {
                    raw.to_string()
                } else {
                    format!(
                        "{}/{container}?{}",
                        endpoint.trim_end_matches('/'),
                        raw.trim_start_matches('?')
                    )
                };
                let url = reqwest::Url::parse(&url)
                    .map_err(|_| format!("{shown}: the SAS does not form a valid URL"))?;
                (url, None, Some(sas))
            }
            AzureAuth::Token(credential) => {
                let url =
                    reqwest::Url::parse(&format!("{}/{container}", endpoint.trim_end_matches('/')))
                        .map_err(|e| format!("{shown}: {e}"))?;
                (url, Some(credential), None)
            }
        };
        let container = BlobContainerClient::new(url, credential, Some(options))
            .map_err(|e| format!("{shown}: {}", scrub(&e.to_string(), sas.as_ref())))?;
        Ok(AzureStage {
            container,
            shown,
            sas,
            timeout,
            clock,
        })
    }

    /// Creates the container when it is missing; a clear error when the credentials may not.
    pub async fn ensure_container(&self) -> Result<(), StageError> {
        let exists = match self.call("check", "", self.container.exists()).await {
            Ok(exists) => exists,
            // A container SAS may not read the container's properties: list instead.
            Err(e) if e.message.contains("403") => self.probe_by_listing().await?,
            Err(e) => return Err(e),
        };
        if exists {
            return Ok(());
        }
        match self.call("create", "", self.container.create(None)).await {
            Ok(_) => {
                tracing::info!(stage = %self.shown, "created the container");
                Ok(())
            }
            Err(e) if e.message.contains("409") => Ok(()),
            Err(mut e) => {
                e.message = format!(
                    "{}; create the container, or give the identity the right to (Storage Blob \
                     Data Contributor, or a SAS with the create permission)",
                    e.message
                );
                Err(e)
            }
        }
    }

    async fn probe_by_listing(&self) -> Result<bool, StageError> {
        let probe = async {
            let options = BlobContainerClientListBlobsOptions {
                maxresults: Some(1),
                ..Default::default()
            };
            let mut items = self.container.list_blobs(Some(options))?;
            match items.next().await {
                Some(Err(e)) if not_found(&e) => Ok(false),
                Some(Err(e)) => Err(e),
                _ => Ok(true),
            }
        };
        self.call("check", "", probe).await
    }

    /// Runs one SDK call with the stage's timeout, mapping errors to messages without secrets.
    async fn call<T>(
        &self,
        operation: &'static str,
        key: &str,
        future: impl std::future::Future<Output = azure_core::Result<T>>,
    ) -> Result<T, StageError> {
        match tokio::time::timeout(self.timeout, future).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(self.error(operation, key, describe(&e, self.sas.as_ref()))),
            Err(_) => Err(self.error(
                operation,
                key,
                format!("no answer within {} s", self.timeout.as_secs()),
            )),
        }
    }

    fn error(&self, operation: &'static str, key: &str, message: String) -> StageError {
        StageError {
            stage: self.shown.clone(),
            operation,
            key: key.to_string(),
            message,
        }
    }

    /// Uploads `bytes` as they are (the SDK sends a `Bytes` body without copying it): in one
    /// request up to [`ONE_REQUEST`], in blocks beyond.
    async fn upload(
        &self,
        key: &str,
        bytes: Bytes,
        mut options: BlobClientUploadOptions<'_>,
    ) -> azure_core::Result<Option<Version>> {
        options.partition_size = Some(ONE_REQUEST);
        let blob = self.container.blob_client(key);
        let content: RequestContent<Bytes, azure_core::http::NoFormat> = bytes.into();
        let result = blob.upload(content, Some(options)).await?;
        Ok(result.etag.map(|e| Version(e.to_string())))
    }
}

/// Whether an error is "the condition was not met" (exists already, or changed meanwhile).
fn conflict(e: &azure_core::Error) -> bool {
    matches!(
        e.http_status(),
        Some(StatusCode::Conflict) | Some(StatusCode::PreconditionFailed)
    )
}

fn not_found(e: &azure_core::Error) -> bool {
    e.http_status() == Some(StatusCode::NotFound)
}

/// A short description of an SDK error: status and error code, or the transport's message,
/// with any SAS removed.
fn describe(e: &azure_core::Error, sas: Option<&Secret>) -> String {
    let text = match e.kind() {
        ErrorKind::HttpResponse {
            status, error_code, ..
        } => format!(
            "answered {} {}",
            u16::from(*status),
            error_code.as_deref().unwrap_or("")
        ),
        ErrorKind::Io => format!("cannot be reached: {e}"),
        _ => e.to_string(),
    };
    scrub(&text, sas)
}

/// Removes a SAS (the whole token and any `sig=` value) from a message.
pub fn scrub(text: &str, sas: Option<&Secret>) -> String {
    let mut out = text.to_string();
    if let Some(sas) = sas {
        let token = sas.expose().trim();
        let query = token
            .split_once('?')
            .map_or(token, |(_, q)| q)
            .trim_start_matches('?');
        if !query.is_empty() {
            out = out.replace(query, "<sas>");
        }
    }
    // Any signature left (an SDK that prints a URL its own way).
    let mut cleaned = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(i) = rest.find("sig=") {
        cleaned.push_str(&rest[..i + 4]);
        cleaned.push_str("<redacted>");
        rest = &rest[i + 4..];
        let end = rest.find(['&', ' ', '"', '\'', ')']).unwrap_or(rest.len());
        rest = &rest[end..];
    }
    cleaned.push_str(rest);
    cleaned
}

#[async_trait]
impl Stage for AzureStage {
    async fn probe(&self) -> Result<String, StageError> {
        let key = format!("probe/{}", super::probe_name());
        let options = BlobClientUploadOptions {
            if_none_match: Some("*".into()),
            ..Default::default()
        };
        self.call(
            "write",
            &key,
            self.upload(&key, Bytes::from_static(b"probe"), options),
        )
        .await?;
        let blob = self.container.blob_client(&key);
        self.call("delete", &key, blob.delete(None))
            .await
            .map_err(|mut e| {
                e.message = format!(
                    "{}; the probe blob is left behind (an immutability policy on the container \
                     refuses deletes: set stage.state_container, see docs/operations.md)",
                    e.message
                );
                e
            })?;
        let clock = self
            .clock
            .verdict()
            .map_or(String::new(), |v| format!("; {v}"));
        Ok(format!("{} takes writes{clock}", self.describe()))
    }

    async fn put_new(&self, key: &str, bytes: &[u8]) -> Result<Created, StageError> {
        self.put_new_shared(key, Bytes::copy_from_slice(bytes))
            .await
    }

    async fn put_new_shared(&self, key: &str, bytes: Bytes) -> Result<Created, StageError> {
        let options = BlobClientUploadOptions {
            if_none_match: Some("*".into()),
            ..Default::default()
        };
        match tokio::time::timeout(self.timeout, self.upload(key, bytes, options)).await {
            Ok(Ok(_)) => Ok(Created::New),
            Ok(Err(e)) if conflict(&e) => Ok(Created::AlreadyExists),
            Ok(Err(e)) => Err(self.error("create", key, describe(&e, self.sas.as_ref()))),
            Err(_) => Err(self.error(
                "create",
                key,
                format!("no answer within {} s", self.timeout.as_secs()),
            )),
        }
    }

    async fn put(&self, key: &str, bytes: &[u8]) -> Result<(), StageError> {
        self.call(
            "write",
            key,
            self.upload(
                key,
                Bytes::copy_from_slice(bytes),
                BlobClientUploadOptions::default(),
            ),
        )
        .await
        .map(|_| ())
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StageError> {
        Ok(self.get_versioned(key).await?.map(|(bytes, _)| bytes))
    }

    async fn size(&self, key: &str) -> Result<Option<u64>, StageError> {
        let blob = self.container.blob_client(key);
        let properties = async {
            match blob.get_properties(None).await {
                // A blob's properties answer names its length in Content-Length.
                Ok(answer) => Ok(Some(answer.content_length()?.unwrap_or(0))),
                Err(e) if not_found(&e) => Ok(None),
                Err(e) => Err(e),
            }
        };
        self.call("read", key, properties).await
    }

    async fn get_versioned(&self, key: &str) -> Result<Option<(Vec<u8>, Version)>, StageError> {
        let blob = self.container.blob_client(key);
        let download = async {
            match blob.download(None).await {
                Ok(result) => {
                    let version = Version(
                        result
                            .properties
                            .etag
                            .as_ref()
                            .map(|e| e.to_string())
                            .unwrap_or_default(),
                    );
                    // The body as it came, without a copy when it came in one piece.
                    let bytes = result.body.collect().await?;
                    Ok(Some((Vec::from(bytes), version)))
                }
                Err(e) if not_found(&e) => Ok(None),
                Err(e) => Err(e),
            }
        };
        self.call("read", key, download).await
    }

    async fn put_if(
        &self,
        key: &str,
        bytes: &[u8],
        expected: Option<&Version>,
    ) -> Result<Option<Version>, StageError> {
        let options = match expected {
            Some(version) => BlobClientUploadOptions {
                if_match: Some(version.0.as_str().into()),
                ..Default::default()
            },
            None => BlobClientUploadOptions {
                if_none_match: Some("*".into()),
                ..Default::default()
            },
        };
        match tokio::time::timeout(
            self.timeout,
            self.upload(key, Bytes::copy_from_slice(bytes), options),
        )
        .await
        {
            Ok(Ok(version)) => Ok(Some(version.unwrap_or(Version(String::new())))),
            Ok(Err(e)) if conflict(&e) => Ok(None),
            Ok(Err(e)) => Err(self.error("write", key, describe(&e, self.sas.as_ref()))),
            Err(_) => Err(self.error(
                "write",
                key,
                format!("no answer within {} s", self.timeout.as_secs()),
            )),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StageError> {
        let listing = async {
            let options = BlobContainerClientListBlobsOptions {
                prefix: Some(prefix.to_string()),
                ..Default::default()
            };
            let mut items = self.container.list_blobs(Some(options))?;
            let mut keys = Vec::new();
            while let Some(item) = items.next().await {
                if let Some(name) = item?.name {
                    keys.push(name);
                }
            }
            Ok(keys)
        };
        self.call("list", prefix, listing).await
    }

    fn describe(&self) -> String {
        self.shown.clone()
    }

    async fn prepare(&self) -> Result<(), StageError> {
        self.ensure_container().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::Lines;

    /// A copy that cannot be staged (nothing listens at the endpoint) is reported in the
    /// daemon's own words; the SDK's line with the copy's URL (its mailbox, its item key)
    /// stays out of the log at the default verbosity, and comes with debugging asked for.
    #[tokio::test]
    async fn a_failed_request_leaves_no_url_in_the_default_log() {
        use tracing_subscriber::util::SubscriberInitExt;
        crate::install_crypto_provider();
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}/devstoreaccount1", closed.local_addr().unwrap());
        drop(closed);
        let stage = AzureStage::new(
            &endpoint,
            "comms-archiver",
            AzureAuth::Sas(Secret::from_value("sv=2020-12-06&sr=c&sp=racwdl&sig=abc")),
            0,
            Duration::from_secs(10),
        )
        .unwrap();
        let key = "staged/o2/2026-11-20/jane.doe@contoso.com/0123abcd.eml";
        for (verbosity, shown) in [(0, false), (-1, false), (1, true)] {
            let lines = Lines::default();
            let guard = lines.subscriber(verbosity).set_default();
            let failed = stage
                .put_new_shared(key, Bytes::from_static(b"Subject: x\r\n\r\n"))
                .await;
            tracing::error!("the copy could not be staged");
            drop(guard);
            assert!(failed.is_err());
            let text = lines.text();
            assert!(text.contains("the copy could not be staged"), "{text}");
            assert_eq!(
                text.contains("jane.doe@contoso.com"),
                shown,
                "verbosity {verbosity}: {text}"
            );
        }
    }

    /// A service whose clock is five minutes ahead of this host's: the daemon's requests are
    /// answered as usual, and the daemon warns, once, and `check` says so.
    #[tokio::test]
    async fn a_stage_whose_clock_is_minutes_ahead_is_said_to_be() {
        use crate::http_server::{self, Request, Response};
        use tracing_subscriber::util::SubscriberInitExt;
        crate::install_crypto_provider();
        let listener = http_server::bind("127.0.0.1:0".parse().unwrap(), "fake storage")
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let answer = |request: Request| async move {
            let ahead = chrono::Utc::now() + chrono::TimeDelta::minutes(5);
            let status = if request.method == "DELETE" { 202 } else { 201 };
            Response::new(status, "application/octet-stream", Vec::new())
                .with_header("etag", "\"0x8DD1\"")
                .with_header("last-modified", "Mon, 07 Dec 2026 10:00:00 GMT")
                .with_header(
                    "date",
                    ahead.format("%a, %d %b %Y %H:%M:%S GMT").to_string(),
                )
        };
        let server = tokio::spawn(http_server::serve(listener, Arc::new(answer)));
        let stage = AzureStage::new(
            &format!("http://{addr}/devstoreaccount1"),
            "comms-archiver",
            AzureAuth::Sas(Secret::from_value("sv=2020-12-06&sr=c&sp=racwdl&sig=abc")),
            0,
            Duration::from_secs(10),
        )
        .unwrap();
        let lines = Lines::default();
        let guard = lines.subscriber(0).set_default();
        for n in 0..3 {
            let key = format!("staged/o2/2026-12-06/{n}.eml");
            let created = stage.put_new_shared(&key, Bytes::from_static(b"x")).await;
            assert!(matches!(created, Ok(Created::New)), "{created:?}");
        }
        let probed = stage.probe().await.unwrap();
        drop(guard);
        server.abort();
        let text = lines.text();
        let warnings: Vec<&str> = text.lines().filter(|l| l.contains("clock")).collect();
        assert_eq!(warnings.len(), 1, "{text}");
        let warning: serde_json::Value = serde_json::from_str(warnings[0]).unwrap();
        let offset = warning["fields"]["offset_secs"].as_f64().unwrap();
        assert!((295.0..=301.0).contains(&offset), "{text}");
        assert!(
            warning["fields"]["message"]
                .as_str()
                .unwrap()
                .starts_with(&format!(
                    "this host's clock is at least {offset} s behind the stage's"
                )),
            "{text}"
        );
        assert!(
            probed.contains("takes writes; this host's clock is at least ")
                && probed.ends_with(" s behind the stage's"),
            "{probed}"
        );
    }

    #[test]
    fn scrub_removes_the_sas_and_any_signature() {
        let sas = Secret::from_value("sv=2020-12-06&sr=c&sp=racwdl&sig=abc%2Bdef");
        let text = "GET http://127.0.0.1:10000/devstoreaccount1/c?sv=2020-12-06&sr=c&sp=racwdl&sig=abc%2Bdef failed";
        let clean = scrub(text, Some(&sas));
        assert!(!clean.contains("abc%2Bdef"), "{clean}");
        assert_eq!(scrub("x?sig=SECRET&a=1", None), "x?sig=<redacted>&a=1");
    }
}

//! The `[stage]` section: where rendered messages, the ledger, checkpoints and status logs
//! are kept, and how the stage is reached.

use crate::checks::{self, Invalid};
use crate::secret::SecretRef;
use serde::Deserialize;
use std::path::PathBuf;
use url::Url;

/// Where rendered messages, the ledger, checkpoints and status logs are kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum StageConfig {
    /// A local directory (the embedded default).
    Local {
        path: PathBuf,
        /// Where state (day states, leases, checkpoints, the reconciliation's copy) is
        /// kept, apart from the evidence under `path`; unset: under `path` too.
        #[serde(default)]
        state_path: Option<PathBuf>,
    },
    /// A container in Azure Blob Storage.
    Azure(Box<AzureStageConfig>),
}

/// A container in Azure Blob Storage and how to reach it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureStageConfig {
    /// The storage account name.
    pub account: String,
    /// The container; created when missing if the credentials allow.
    pub container: String,
    /// A second container of the same account for state (day states, leases, checkpoints,
    /// the reconciliation's copy), so that an immutability policy on `container` covers the
    /// evidence alone; unset: both in `container`.
    #[serde(default)]
    pub state_container: Option<String>,
    /// "azure-global" (blob.core.windows.net, login.microsoftonline.com) or
    /// "azure-government" (blob.core.usgovcloudapi.net, login.microsoftonline.us).
    #[serde(default)]
    pub cloud: AzureCloud,
    /// The blob endpoint, when not the cloud's default (e.g. Azurite's
    /// http://127.0.0.1:10000/devstoreaccount1).
    #[serde(default, deserialize_with = "checks::de_optional_url")]
    pub endpoint: Option<Url>,
    /// Allow a plain-http endpoint on a loopback address (Azurite).
    #[serde(default)]
    pub allow_http_loopback: bool,
    /// "managed-identity", "workload-identity", "client-secret", "client-certificate" or "sas".
    pub auth: AzureAuthKind,
    /// client-secret, client-certificate: the tenant; workload-identity: overrides AZURE_TENANT_ID.
    pub tenant_id: Option<String>,
    /// client-secret, client-certificate: the application; managed-identity: a user-assigned
    /// identity; workload-identity: overrides AZURE_CLIENT_ID.
    pub client_id: Option<String>,
    pub client_secret: Option<SecretRef>,
    /// client-certificate: a PEM with the certificate and its RSA private key.
    pub client_certificate: Option<SecretRef>,
    /// sas: a container SAS token, or a full container SAS URL.
    pub sas: Option<SecretRef>,
    /// Retries of a failing request (the SDK's exponential backoff). Default 4.
    #[serde(default = "default_retries")]
    pub max_retries: u32,
    /// Seconds one operation may take, retries included. Default 30.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// A local directory where this daemon keeps the messages it stages until it delivers
    /// them, so that delivering does not download them again; unset: no cache.
    #[serde(default)]
    pub cache_path: Option<PathBuf>,
    /// Bytes the cache holds at most; the oldest messages are let go first. Default 4 GiB.
    #[serde(default = "default_cache_max_bytes")]
    pub cache_max_bytes: u64,
}

fn default_cache_max_bytes() -> u64 {
    super::cache::DEFAULT_CACHE_MAX_BYTES
}

/// The smallest cache worth having: a few messages at the size gate.
const MIN_CACHE_BYTES: u64 = 64 * 1024 * 1024;

fn default_retries() -> u32 {
    4
}

fn default_timeout() -> u64 {
    30
}

/// An Azure cloud.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AzureCloud {
    #[default]
    AzureGlobal,
    AzureGovernment,
}

impl AzureCloud {
    /// The default blob endpoint of an account.
    pub fn blob_endpoint(self, account: &str) -> String {
        match self {
            AzureCloud::AzureGlobal => format!("https://{account}.blob.core.windows.net"),
            AzureCloud::AzureGovernment => format!("https://{account}.blob.core.usgovcloudapi.net"),
        }
    }

    /// The Entra ID login host of the cloud.
    pub fn login_host(self) -> &'static str {
        match self {
            AzureCloud::AzureGlobal => "https://login.microsoftonline.com",
            AzureCloud::AzureGovernment => "https://login.microsoftonline.us",
        }
    }
}

/// How the stage authenticates to Azure Storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AzureAuthKind {
    ManagedIdentity,
    WorkloadIdentity,
    ClientSecret,
    ClientCertificate,
    Sas,
}

impl StageConfig {
    /// Checks what the types cannot: names, the endpoint, the credentials each
    /// authentication needs.
    pub fn validate(&self) -> Result<(), Invalid> {
        match self {
            StageConfig::Local { .. } => Ok(()),
            StageConfig::Azure(azure) => azure.validate(),
        }
    }
}

impl AzureStageConfig {
    fn validate(&self) -> Result<(), Invalid> {
        let name_ok = |n: &str, max: usize| {
            (3..=max).contains(&n.len())
                && n.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !n.starts_with('-')
                && !n.ends_with('-')
                && !n.contains("--")
        };
        if !name_ok(&self.account, 24) || self.account.contains('-') {
            return Err(Invalid::new(
                "account",
                format!(
                    "'{}' is not a storage account name (3 to 24 lowercase letters and digits)",
                    self.account
                ),
            ));
        }
        if !name_ok(&self.container, 63) {
            return Err(Invalid::new(
                "container",
                format!(
                    "'{}' is not a container name (3 to 63 lowercase letters, digits and single \
                     hyphens)",
                    self.container
                ),
            ));
        }
        if let Some(state) = &self.state_container {
            if !name_ok(state, 63) || *state == self.container {
                return Err(Invalid::new(
                    "state_container",
                    format!(
                        "'{state}' is not a container name other than `container` (3 to 63 \
                         lowercase letters, digits and single hyphens)"
                    ),
                ));
            }
        }
        if self.cache_path.is_some() && self.cache_max_bytes < MIN_CACHE_BYTES {
            return Err(Invalid::new(
                "cache_max_bytes",
                format!(
                    "{} bytes would not hold one large message; give at least {MIN_CACHE_BYTES} \
                     (64 MiB), or leave cache_path unset for no cache",
                    self.cache_max_bytes
                ),
            ));
        }
        if let Some(endpoint) = &self.endpoint {
            checks::endpoint(endpoint, self.allow_http_loopback)
                .map_err(|why| Invalid::new("endpoint", why))?;
        }
        let need = |present: bool, key: &'static str, auth: &str| match present {
            true => Ok(()),
            false => Err(Invalid::new(
                key,
                format!("auth = \"{auth}\" needs stage.{key}"),
            )),
        };
        match self.auth {
            AzureAuthKind::ClientSecret => {
                need(self.tenant_id.is_some(), "tenant_id", "client-secret")?;
                need(self.client_id.is_some(), "client_id", "client-secret")?;
                need(
                    self.client_secret.is_some(),
                    "client_secret",
                    "client-secret",
                )
            }
            AzureAuthKind::ClientCertificate => {
                need(self.tenant_id.is_some(), "tenant_id", "client-certificate")?;
                need(self.client_id.is_some(), "client_id", "client-certificate")?;
                need(
                    self.client_certificate.is_some(),
                    "client_certificate",
                    "client-certificate",
                )
            }
            AzureAuthKind::Sas => need(self.sas.is_some(), "sas", "sas"),
            AzureAuthKind::ManagedIdentity | AzureAuthKind::WorkloadIdentity => Ok(()),
        }
    }

    /// The blob endpoint in effect: as configured, or the cloud's for the account.
    pub fn blob_endpoint(&self) -> String {
        match &self.endpoint {
            Some(url) => url.as_str().trim_end_matches('/').to_string(),
            None => self.cloud.blob_endpoint(&self.account),
        }
    }
}

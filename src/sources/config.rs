//! A connector's section, `[connectors.<name>]`: its partner, folder, mapping and source.

use super::partner::{Partner, Transport};
use crate::checks::{self, Invalid};
use crate::secret::SecretRef;
use serde::Deserialize;
use std::path::PathBuf;
use url::Url;

/// One connector: a partner source, its mapping, and its folder.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorConfig {
    pub partner: Partner,
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Inbox subfolder; defaults to the name Microsoft's connector uses.
    pub folder: Option<String>,
    /// Custom mapping CSV: phone number or partner address to mailbox.
    pub mapping_csv: Option<PathBuf>,
    /// Fall back to the item's email property when the CSV has no match.
    #[serde(default = "default_true")]
    pub use_email_property: bool,
    /// Required for partner "celltrust-sl2".
    pub celltrust: Option<super::celltrust::CellTrustConfig>,
    pub source: SourceConfig,
}

fn default_true() -> bool {
    true
}

impl ConnectorConfig {
    /// The folder name in effect.
    pub fn folder(&self) -> &str {
        self.folder
            .as_deref()
            .unwrap_or(self.partner.default_folder())
    }
}

/// How a connector reaches its partner.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "transport", rename_all = "kebab-case", deny_unknown_fields)]
pub enum SourceConfig {
    /// An export drop directory (what the partner's SFTP delivery lands in).
    Drop { path: PathBuf },
    /// TeleMessage's EML ZIP export drop (`YYYYMMDD0000-TeleMessage_<n>_<time>.zip`).
    ZipDrop { path: PathBuf },
    /// The partner's HTTPS API.
    Https(Box<HttpsConfig>),
    /// Messages the partner sends to the SMTP intake (`[intake]`), for these recipients.
    Smtp {
        /// The addresses the partner sends this connector's messages to, e.g.
        /// `o2-archive@archive.contoso.com`.
        recipients: Vec<String>,
        /// Hours after a day ends (UTC) that its messages may still arrive: TeleMessage
        /// forwards between 00:00 and 03:00 and sends threaded emails at 01:00 the next
        /// day. The day is read once they have passed. Default 3.
        #[serde(default = "default_settle_hours")]
        settle_hours: u32,
    },
}

/// A partner API and its credentials.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpsConfig {
    /// The API's base URL; https, or http to a loopback address with `allow_http_loopback`.
    #[serde(deserialize_with = "checks::de_url")]
    pub url: Url,
    #[serde(default)]
    pub allow_http_loopback: bool,
    /// TeleMessage: the account's username and password.
    pub username: Option<String>,
    pub password: Option<SecretRef>,
    /// CellTrust SL2: the API client's id and secret.
    pub client_id: Option<String>,
    pub client_secret: Option<SecretRef>,
    /// Veritas Merge1: the API key.
    pub api_key: Option<SecretRef>,
    /// Items per page. Default 200.
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// Hours before the day that each day's window also covers, for late arrivals. Default 6.
    #[serde(default = "default_overlap_hours")]
    pub overlap_hours: u32,
    /// Seconds one request may take. Default 60.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// Retries of a failing request before the day is left open. Default 5.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// First retry delay in milliseconds; it doubles, with jitter, up to 60 s. Default 1000.
    #[serde(default = "default_retry_initial_ms")]
    pub retry_initial_ms: u64,
    /// The largest answer a page may be; a longer one is an error of the day, never read on.
    #[serde(default = "default_max_page_bytes")]
    pub max_page_bytes: u64,
}

fn default_page_size() -> u32 {
    200
}

fn default_overlap_hours() -> u32 {
    6
}

fn default_settle_hours() -> u32 {
    3
}

fn default_timeout_secs() -> u64 {
    60
}

fn default_max_retries() -> u32 {
    5
}

fn default_max_page_bytes() -> u64 {
    64 * 1024 * 1024
}

fn default_retry_initial_ms() -> u64 {
    1000
}

impl SourceConfig {
    pub fn transport(&self) -> Transport {
        match self {
            SourceConfig::Drop { .. } => Transport::Drop,
            SourceConfig::ZipDrop { .. } => Transport::ZipDrop,
            SourceConfig::Https(_) => Transport::Https,
            SourceConfig::Smtp { .. } => Transport::Smtp,
        }
    }
}

impl HttpsConfig {
    /// Whether a credential key of the `source` table is set.
    fn has(&self, key: &str) -> bool {
        match key {
            "username" => self.username.is_some(),
            "password" => self.password.is_some(),
            "client_id" => self.client_id.is_some(),
            "client_secret" => self.client_secret.is_some(),
            "api_key" => self.api_key.is_some(),
            _ => false,
        }
    }
}

impl ConnectorConfig {
    /// Checks what the types cannot, against the partner's descriptor: the folder, the
    /// partner's own table, the transport and the credentials it needs. Keys are relative
    /// to the connector's table (the empty key is the table itself).
    pub fn validate(&self) -> Result<(), Invalid> {
        let partner = self.partner.descriptor();
        if let Some(folder) = &self.folder {
            checks::folder_name(folder).map_err(|why| Invalid::new("folder", why))?;
        }
        match (partner.celltrust_table, &self.celltrust) {
            (true, None) => {
                return Err(Invalid::new(
                    "",
                    format!(
                        "partner {} needs a [connectors.<name>.celltrust] table with \
                         environment and domain",
                        partner.name
                    ),
                ))
            }
            (true, Some(ct)) => ct.validate().map_err(|e| e.under("celltrust"))?,
            (false, Some(_)) => {
                return Err(Invalid::new(
                    "celltrust",
                    format!(
                        "only partner celltrust-sl2 takes a celltrust table, not {}",
                        partner.name
                    ),
                ))
            }
            (false, None) => {}
        }
        let transport = self.source.transport();
        if !partner.transports.contains(&transport) {
            let allowed: Vec<&str> = partner.transports.iter().map(|t| t.as_str()).collect();
            let takers: Vec<&str> = super::partner::REGISTRY
                .iter()
                .filter(|d| d.transports.contains(&transport))
                .map(|d| d.name)
                .collect();
            let why = format!(
                "partner {} does not take transport \"{}\" (it takes {}); use {} with {}",
                partner.name,
                transport.as_str(),
                allowed.join(", "),
                transport.as_str(),
                takers.join(" or ")
            );
            return Err(Invalid::new("source.transport", why));
        }
        if let SourceConfig::Smtp {
            recipients,
            settle_hours,
        } = &self.source
        {
            if recipients.is_empty() {
                return Err(Invalid::new(
                    "source.recipients",
                    "list the addresses the partner sends this connector's messages to",
                ));
            }
            if let Some(bad) = recipients.iter().find(|r| {
                let (local, domain) = r.rsplit_once('@').unwrap_or(("", ""));
                local.is_empty()
                    || !checks::is_domain(&domain.to_ascii_lowercase())
                    || r.chars().any(char::is_whitespace)
            }) {
                return Err(Invalid::new(
                    "source.recipients",
                    format!("'{bad}' is not an address (local@domain)"),
                ));
            }
            if *settle_hours > 48 {
                return Err(Invalid::new("source.settle_hours", "must be 0 to 48"));
            }
        }
        if let SourceConfig::Https(https) = &self.source {
            checks::endpoint(&https.url, https.allow_http_loopback)
                .map_err(|why| Invalid::new("source.url", why))?;
            if let Some(missing) = partner.auth.credentials().iter().find(|k| !https.has(k)) {
                return Err(Invalid::new(
                    "source",
                    format!("partner {} over HTTPS needs source.{missing}", partner.name),
                ));
            }
            if https.page_size == 0 || https.page_size > 10_000 {
                return Err(Invalid::new("source.page_size", "must be 1 to 10000"));
            }
        }
        Ok(())
    }
}

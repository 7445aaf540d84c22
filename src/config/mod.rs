//! The configuration: one TOML file, overridable from the environment
//! (`COMMS_ARCHIVER__SECTION__KEY`), validated before anything is built.
//!
//! Every error names the file, the line and the key, so an admin can fix it without guessing.

mod locate;
mod secret;

pub use locate::line_of_key;
use locate::*;
use secret::INLINE_SECRET;
pub use secret::{Secret, SecretRef};

use chrono::NaiveTime;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Prefix of environment overrides: `COMMS_ARCHIVER__SCHEDULE__WAKE_TIME=05:30`.
pub const ENV_PREFIX: &str = "COMMS_ARCHIVER";

/// A configuration problem, located as precisely as the input allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, " line {line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ", key `{key}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// The whole validated configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub archiver: ArchiverConfig,
    #[serde(default)]
    pub schedule: ScheduleConfig,
    #[serde(default)]
    pub mapping: MappingConfig,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    pub stage: StageConfig,
    pub mailbox: MailboxConfig,
    pub connectors: BTreeMap<String, ConnectorConfig>,
    /// The file this configuration was read from (for error messages).
    #[serde(skip)]
    pub file: PathBuf,
}

/// Limits that apply to every connector.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiverConfig {
    /// Items whose rendered message is larger are not imported (failed, `size_exceeded`).
    #[serde(default = "default_max_item_bytes")]
    pub max_item_bytes: u64,
    /// Copies staged and imported at once. Unset: 8 for a Maildir, 16 over IMAP, 64 through
    /// Graph (each Graph request waits on the network; four per mailbox may run at once).
    #[serde(default)]
    pub max_in_flight: Option<usize>,
    /// Bytes of rendered messages in flight at once, whatever their number: the bound on the
    /// memory a day takes. A single larger message still goes, alone.
    #[serde(default = "default_max_in_flight_bytes")]
    pub max_in_flight_bytes: u64,
}

impl Default for ArchiverConfig {
    fn default() -> Self {
        ArchiverConfig {
            max_item_bytes: default_max_item_bytes(),
            max_in_flight: None,
            max_in_flight_bytes: default_max_in_flight_bytes(),
        }
    }
}

fn default_max_in_flight_bytes() -> u64 {
    48 * 1024 * 1024
}

impl Config {
    /// Copies in flight at once: as configured, or what suits the mailbox backend.
    pub fn max_in_flight(&self) -> usize {
        self.archiver.max_in_flight.unwrap_or(match self.mailbox {
            MailboxConfig::Maildir { .. } => 8,
            MailboxConfig::Imap(_) => 16,
            MailboxConfig::Graph(_) => 64,
        })
    }
}

/// `archiver.max_item_bytes` unless configured: Microsoft's connectors' 10 MB rule.
pub const DEFAULT_MAX_ITEM_BYTES: u64 = 10 * 1024 * 1024;

fn default_max_item_bytes() -> u64 {
    DEFAULT_MAX_ITEM_BYTES
}

/// When the daemon wakes and how far back it catches up on its own.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// "HH:MM", UTC.
    #[serde(default = "default_wake_time")]
    pub wake_time: String,
    /// IANA time zone of `wake_time`, e.g. "Europe/London". Days are always UTC days.
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
    /// Days up to yesterday that `run` processes without an explicit backfill.
    #[serde(default = "default_catch_up_days")]
    pub catch_up_days: u32,
    /// After SIGTERM or SIGINT, how long in-flight work may take before the process exits
    /// anyway (what is unfinished is redone by the next run).
    #[serde(default = "default_shutdown_timeout_secs")]
    pub shutdown_timeout_secs: u64,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig {
            wake_time: default_wake_time(),
            time_zone: default_time_zone(),
            catch_up_days: default_catch_up_days(),
            shutdown_timeout_secs: default_shutdown_timeout_secs(),
        }
    }
}

fn default_time_zone() -> String {
    "UTC".to_string()
}

fn default_shutdown_timeout_secs() -> u64 {
    30
}

fn default_wake_time() -> String {
    "04:00".to_string()
}

fn default_catch_up_days() -> u32 {
    7
}

impl ScheduleConfig {
    /// The validated wake time.
    pub fn wake(&self) -> NaiveTime {
        NaiveTime::parse_from_str(&self.wake_time, "%H:%M").expect("validated at load")
    }

    /// The validated time zone.
    pub fn tz(&self) -> chrono_tz::Tz {
        self.time_zone.parse().expect("validated at load")
    }
}

/// The HTTP endpoint for health and metrics (off unless `listen` is set).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// e.g. "127.0.0.1:9464": serves /healthz, /readyz and /metrics.
    pub listen: Option<std::net::SocketAddr>,
    /// Allow a non-loopback `listen` address (a container scraped from outside).
    #[serde(default)]
    pub allow_remote: bool,
}

/// Settings shared by every connector's user mapping.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingConfig {
    /// ISO 3166 region for phone numbers written without a country code.
    #[serde(default = "default_region")]
    pub default_region: String,
    /// The organisation's mail domains. An email property outside them is an external party
    /// and gets no copy. Empty: every email property counts as a mailbox.
    #[serde(default)]
    pub domains: Vec<String>,
}

impl Default for MappingConfig {
    fn default() -> Self {
        MappingConfig {
            default_region: default_region(),
            domains: Vec::new(),
        }
    }
}

fn default_region() -> String {
    "US".to_string()
}

/// Where rendered messages, the ledger, checkpoints and status logs are kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum StageConfig {
    /// A local directory (the embedded default).
    Local { path: PathBuf },
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
    /// "azure-global" (blob.core.windows.net, login.microsoftonline.com) or
    /// "azure-government" (blob.core.usgovcloudapi.net, login.microsoftonline.us).
    #[serde(default)]
    pub cloud: AzureCloud,
    /// The blob endpoint, when not the cloud's default (e.g. Azurite's
    /// http://127.0.0.1:10000/devstoreaccount1).
    pub endpoint: Option<String>,
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
    #[serde(default = "default_azure_retries")]
    pub max_retries: u32,
    /// Seconds one operation may take, retries included. Default 30.
    #[serde(default = "default_azure_timeout")]
    pub timeout_secs: u64,
}

fn default_azure_retries() -> u32 {
    4
}

fn default_azure_timeout() -> u64 {
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

/// Where messages are imported.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum MailboxConfig {
    /// A Maildir++ tree: `<path>/<mailbox address>/.INBOX.<folder>/` (the embedded default).
    Maildir { path: PathBuf },
    /// An IMAP server: Exchange Online (XOAUTH2) or any other.
    Imap(Box<ImapConfig>),
    /// Exchange Online through Microsoft Graph, app-only.
    Graph(Box<GraphConfig>),
}

/// Microsoft Graph, app-only (client credentials; permission Mail.ReadWrite).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphConfig {
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: SecretRef,
    /// "worldwide" (default), "us-gov-gcc-high" or "us-gov-dod": login and Graph hosts.
    #[serde(default)]
    pub cloud: M365Cloud,
    /// Overrides of the Graph base URL (default `<cloud's Graph host>/v1.0`) and the token URL
    /// (tests against a fake Graph).
    pub graph_url: Option<String>,
    pub token_url: Option<String>,
    /// Allow plain-http overrides on a loopback address.
    #[serde(default)]
    pub allow_http_loopback: bool,
    /// Retries of a throttled or failing request. Default 6.
    #[serde(default = "default_graph_retries")]
    pub max_retries: usize,
    /// Seconds one request may take. Default 60.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
}

fn default_graph_retries() -> usize {
    6
}

/// An IMAP server and how mailboxes log in.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImapConfig {
    /// e.g. "outlook.office365.com".
    pub host: String,
    /// Default 993 (tls), 143 otherwise.
    pub port: Option<u16>,
    /// "tls" (default), "starttls", or "plain" (loopback only, with allow_plaintext_loopback).
    #[serde(default)]
    pub security: ImapSecurity,
    #[serde(default)]
    pub allow_plaintext_loopback: bool,
    /// "login" or "xoauth2".
    pub auth: ImapAuthKind,
    /// login: the user name, `{mailbox}` standing for the mailbox address. Default "{mailbox}".
    #[serde(default = "default_imap_username")]
    pub username: String,
    /// login: the password (of each mailbox, or of the master user).
    pub password: Option<SecretRef>,
    /// login: a master user (Dovecot: logs in as `<mailbox>*<master_user>`).
    pub master_user: Option<String>,
    /// xoauth2: the Entra ID tenant, application and secret (client credentials).
    pub tenant_id: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<SecretRef>,
    /// xoauth2: "worldwide" (default), "us-gov-gcc-high" or "us-gov-dod".
    #[serde(default)]
    pub cloud: M365Cloud,
    /// xoauth2: overrides of the token URL and scope (tests).
    pub token_url: Option<String>,
    pub scope: Option<String>,
    /// Connections at work at once, over all mailboxes. Default 8.
    #[serde(default = "default_imap_connections")]
    pub max_connections: usize,
    /// Logged-in connections kept open between copies, over all mailboxes, so that a
    /// mailbox's next copy needs no new login. Default 32; with `max_connections` within the
    /// server's limit (Dovecot: the imap service's process_limit).
    #[serde(default = "default_imap_idle_connections")]
    pub idle_connections: usize,
    /// Seconds one IMAP operation may take. Default 60.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
}

fn default_imap_username() -> String {
    "{mailbox}".to_string()
}

fn default_imap_connections() -> usize {
    8
}

fn default_imap_idle_connections() -> usize {
    32
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImapSecurity {
    #[default]
    Tls,
    Starttls,
    Plain,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImapAuthKind {
    Login,
    Xoauth2,
}

/// A Microsoft 365 cloud: where tokens come from and which hosts they are for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum M365Cloud {
    #[default]
    Worldwide,
    UsGovGccHigh,
    UsGovDod,
}

impl M365Cloud {
    /// The Entra ID login host.
    pub fn login_host(self) -> &'static str {
        match self {
            M365Cloud::Worldwide => "https://login.microsoftonline.com",
            M365Cloud::UsGovGccHigh | M365Cloud::UsGovDod => "https://login.microsoftonline.us",
        }
    }

    /// The scope of Exchange Online IMAP tokens.
    pub fn outlook_scope(self) -> &'static str {
        match self {
            M365Cloud::Worldwide => "https://outlook.office365.com/.default",
            M365Cloud::UsGovGccHigh => "https://outlook.office365.us/.default",
            M365Cloud::UsGovDod => "https://outlook-dod.office365.us/.default",
        }
    }

    /// The Microsoft Graph host.
    pub fn graph_host(self) -> &'static str {
        match self {
            M365Cloud::Worldwide => "https://graph.microsoft.com",
            M365Cloud::UsGovGccHigh => "https://graph.microsoft.us",
            M365Cloud::UsGovDod => "https://dod-graph.microsoft.us",
        }
    }
}

/// The partner systems a connector can pull from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Partner {
    /// TeleMessage O2 Network Archiver: SMS, MMS and voice calls of corporate O2 numbers.
    TelemessageO2,
    /// TeleMessage WhatsApp Archiver (Phone Archiver and Cloud Archiver).
    TelemessageWhatsapp,
    /// CellTrust SL2, direct.
    CelltrustSl2,
    /// CellTrust through Veritas Merge1 (items already converted to email).
    Merge1Celltrust,
}

impl Partner {
    pub fn as_str(self) -> &'static str {
        match self {
            Partner::TelemessageO2 => "telemessage-o2",
            Partner::TelemessageWhatsapp => "telemessage-whatsapp",
            Partner::CelltrustSl2 => "celltrust-sl2",
            Partner::Merge1Celltrust => "merge1-celltrust",
        }
    }

    /// The Inbox subfolder Microsoft's connector uses for this partner.
    pub fn default_folder(self) -> &'static str {
        match self {
            Partner::TelemessageO2 => "O2 SMS and Voice Network Archiver",
            Partner::TelemessageWhatsapp => "WhatsApp Archiver",
            Partner::CelltrustSl2 => "CellTrust SL2",
            Partner::Merge1Celltrust => "CellTrust",
        }
    }

    /// The reserved domain for participants without an email address.
    pub fn invalid_domain(self) -> &'static str {
        match self {
            Partner::TelemessageO2 | Partner::TelemessageWhatsapp => "telemessage.invalid",
            Partner::CelltrustSl2 => "celltrust.invalid",
            Partner::Merge1Celltrust => "merge1.invalid",
        }
    }

    fn is_telemessage(self) -> bool {
        matches!(self, Partner::TelemessageO2 | Partner::TelemessageWhatsapp)
    }
}

/// CellTrust SL2 settings: the environment and which parts of the domain to archive.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CellTrustConfig {
    /// "azure-global" or "azure-government": where the SL2 domain is hosted.
    pub environment: Sl2Environment,
    /// The SL2 domain.
    pub domain: String,
    /// Archive the domain's own users (those in no organizational unit). Default true.
    #[serde(default = "default_true")]
    pub enable_domain: bool,
    /// Organizational units to archive, each enabled by name: enabling the domain does not
    /// enable its units.
    #[serde(default)]
    pub enable_units: Vec<String>,
}

/// Where a CellTrust SL2 domain is hosted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Sl2Environment {
    AzureGlobal,
    AzureGovernment,
}

impl Sl2Environment {
    pub fn as_str(self) -> &'static str {
        match self {
            Sl2Environment::AzureGlobal => "azure-global",
            Sl2Environment::AzureGovernment => "azure-government",
        }
    }
}

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
    pub celltrust: Option<CellTrustConfig>,
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
}

/// A partner API and its credentials.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpsConfig {
    /// The API's base URL; https, or http to a loopback address with `allow_http_loopback`.
    pub url: String,
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

impl Config {
    /// Reads, overrides from the environment and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: None,
            key: None,
            message: format!("cannot read the configuration file: {e}"),
        })?;
        let env: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}__")))
            .collect();
        Config::from_toml(path, &text, &env)
    }

    /// Parses `text` (named `path` in errors) with the given environment overrides.
    pub fn from_toml(
        path: &Path,
        text: &str,
        env: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        // The file on its own first: toml keeps spans, so errors point at the line.
        let from_file: Config = toml::from_str(text).map_err(|e| {
            let message = e.message().trim().to_string();
            let mut line = e.span().map(|s| line_at(text, s.start));
            let mut key = e.span().and_then(|s| key_on_line(text, s.start));
            // A secret written as a value, in a tagged table (reported at the table): the
            // first secret key of that table written as a plain value.
            if message.contains(INLINE_SECRET) {
                if let Some((found, dotted)) = e
                    .span()
                    .and_then(|span| inline_secret_in_table(text, span.start))
                {
                    line = Some(found);
                    key = Some(dotted);
                }
            }
            // Tagged tables report a wrong value at the table: find the key holding it.
            if let (None, Some(span), Some(value)) = (&key, e.span(), offending_value(&message)) {
                if let Some((found, dotted)) = key_with_value(text, span.start, &value) {
                    line = Some(found);
                    key = Some(dotted);
                }
            }
            // Tagged tables report unknown keys at the table: find the key inside it.
            if let (None, Some(span), Some(field)) = (&key, e.span(), unknown_field(&message)) {
                if let Some(table) = table_at(text, span.start) {
                    let dotted = format!("{}.{field}", table.join("."));
                    if let Some(found) = line_of_key(text, &dotted) {
                        line = Some(found);
                        key = Some(dotted);
                    }
                }
            }
            ConfigError {
                file: path.to_path_buf(),
                line,
                key,
                message,
            }
        })?;
        let config = if env.is_empty() {
            from_file
        } else {
            with_env_overrides(path, text, env)?
        };
        let mut config = config;
        config.file = path.to_path_buf();
        config.validate(path, text, env)?;
        Ok(config)
    }

    fn validate(
        &self,
        path: &Path,
        text: &str,
        env: &[(String, String)],
    ) -> Result<(), ConfigError> {
        let err = |key: &str, message: String| {
            // A value set from the environment is blamed on its variable, not the file.
            let var = format!("{ENV_PREFIX}__{}", key.replace('.', "__").to_uppercase());
            match env.iter().any(|(k, _)| *k == var) {
                true => ConfigError {
                    file: path.to_path_buf(),
                    line: None,
                    key: Some(key.to_string()),
                    message: format!("{message} (set by the environment variable {var})"),
                },
                false => ConfigError {
                    file: path.to_path_buf(),
                    line: line_of_key(text, key),
                    key: Some(key.to_string()),
                    message,
                },
            }
        };
        if NaiveTime::parse_from_str(&self.schedule.wake_time, "%H:%M").is_err() {
            return Err(err(
                "schedule.wake_time",
                format!(
                    "'{}' is not a time of day; write it as HH:MM in UTC, e.g. \"04:00\"",
                    self.schedule.wake_time
                ),
            ));
        }
        if self.schedule.time_zone.parse::<chrono_tz::Tz>().is_err() {
            return Err(err(
                "schedule.time_zone",
                format!(
                    "'{}' is not an IANA time zone such as UTC or Europe/London",
                    self.schedule.time_zone
                ),
            ));
        }
        if let Some(addr) = self.telemetry.listen {
            if !addr.ip().is_loopback() && !self.telemetry.allow_remote {
                return Err(err(
                    "telemetry.listen",
                    format!(
                        "{addr} is not a loopback address; the endpoint has no authentication, \
                         so set telemetry.allow_remote = true only where the network is trusted"
                    ),
                ));
            }
        }
        if self.schedule.catch_up_days == 0 {
            return Err(err(
                "schedule.catch_up_days",
                "must be at least 1 (yesterday)".to_string(),
            ));
        }
        if !(1..=256).contains(&self.max_in_flight()) {
            return Err(err(
                "archiver.max_in_flight",
                "must be 1 to 256".to_string(),
            ));
        }
        if self.archiver.max_in_flight_bytes < 1024 * 1024 {
            return Err(err(
                "archiver.max_in_flight_bytes",
                "must be at least 1048576 (1 MiB)".to_string(),
            ));
        }
        if self.archiver.max_item_bytes == 0 {
            return Err(err(
                "archiver.max_item_bytes",
                "must be greater than 0".to_string(),
            ));
        }
        if self
            .mapping
            .default_region
            .parse::<phonenumber::country::Id>()
            .is_err()
        {
            return Err(err(
                "mapping.default_region",
                format!(
                    "'{}' is not an ISO 3166 region code such as GB or US",
                    self.mapping.default_region
                ),
            ));
        }
        for domain in &self.mapping.domains {
            if !is_domain(domain) {
                return Err(err(
                    "mapping.domains",
                    format!("'{domain}' is not a mail domain such as contoso.com"),
                ));
            }
        }
        if let MailboxConfig::Graph(graph) = &self.mailbox {
            for (key, url) in [
                ("graph_url", &graph.graph_url),
                ("token_url", &graph.token_url),
            ] {
                if let Some(url) = url {
                    check_endpoint(url, graph.allow_http_loopback)
                        .map_err(|why| err(&format!("mailbox.{key}"), why))?;
                }
            }
        }
        if let MailboxConfig::Imap(imap) = &self.mailbox {
            validate_imap(imap).map_err(|(key, why)| err(&format!("mailbox.{key}"), why))?;
        }
        if let StageConfig::Azure(azure) = &self.stage {
            validate_azure(azure).map_err(|(key, why)| err(&format!("stage.{key}"), why))?;
        }
        if self.connectors.is_empty() {
            return Err(err(
                "connectors",
                "no connector is configured; add a [connectors.<name>] table".to_string(),
            ));
        }
        for (name, connector) in &self.connectors {
            if !is_connector_name(name) {
                return Err(err(
                    &format!("connectors.{name}"),
                    format!(
                        "connector name '{name}' must be lowercase letters, digits and '-', \
                         starting with a letter or digit"
                    ),
                ));
            }
            if let Some(folder) = &connector.folder {
                if let Err(why) = check_folder_name(folder) {
                    return Err(err(&format!("connectors.{name}.folder"), why));
                }
            }
            let key = |k: &str| format!("connectors.{name}.{k}");
            match (connector.partner, &connector.celltrust) {
                (Partner::CelltrustSl2, None) => {
                    return Err(err(
                        &format!("connectors.{name}"),
                        "partner celltrust-sl2 needs a [connectors.<name>.celltrust] table with \
                         environment and domain"
                            .into(),
                    ))
                }
                (Partner::CelltrustSl2, Some(ct)) => {
                    if !ct.enable_domain && ct.enable_units.is_empty() {
                        return Err(err(
                            &key("celltrust"),
                            "nothing is enabled: set enable_domain = true or list enable_units"
                                .into(),
                        ));
                    }
                }
                (_, Some(_)) => {
                    return Err(err(
                        &key("celltrust"),
                        format!(
                            "only partner celltrust-sl2 takes a celltrust table, not {}",
                            connector.partner.as_str()
                        ),
                    ))
                }
                (_, None) => {}
            }
            match &connector.source {
                SourceConfig::Drop { .. } => {}
                SourceConfig::ZipDrop { .. } => {
                    if !connector.partner.is_telemessage() {
                        return Err(err(
                            &key("source.transport"),
                            "zip-drop is TeleMessage's EML export; use it with telemessage-o2 or \
                             telemessage-whatsapp"
                                .into(),
                        ));
                    }
                }
                SourceConfig::Https(https) => {
                    if let Err(why) = check_url(https) {
                        return Err(err(&key("source.url"), why));
                    }
                    let needs: &[(&str, bool)] = match connector.partner {
                        Partner::TelemessageO2 | Partner::TelemessageWhatsapp => &[
                            ("username", https.username.is_some()),
                            ("password", https.password.is_some()),
                        ],
                        Partner::CelltrustSl2 => &[
                            ("client_id", https.client_id.is_some()),
                            ("client_secret", https.client_secret.is_some()),
                        ],
                        Partner::Merge1Celltrust => &[("api_key", https.api_key.is_some())],
                    };
                    if let Some((missing, _)) = needs.iter().find(|(_, present)| !present) {
                        return Err(err(
                            &key("source"),
                            format!(
                                "partner {} over HTTPS needs source.{missing}",
                                connector.partner.as_str()
                            ),
                        ));
                    }
                    if https.page_size == 0 || https.page_size > 10_000 {
                        return Err(err(&key("source.page_size"), "must be 1 to 10000".into()));
                    }
                }
            }
        }
        Ok(())
    }

    /// An error about a key of this configuration found after loading (no line known).
    pub fn error(&self, key: &str, message: String) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            line: None,
            key: Some(key.to_string()),
            message,
        }
    }

    /// Reads the secret a key references; a missing reference or an unreadable secret is an
    /// error naming the key (never the value).
    pub fn secret(&self, key: &str, reference: Option<&SecretRef>) -> Result<Secret, ConfigError> {
        reference
            .ok_or_else(|| self.error(key, "is required".into()))?
            .resolve()
            .map_err(|why| self.error(key, why))
    }

    /// The enabled connectors, by name.
    pub fn enabled_connectors(&self) -> impl Iterator<Item = (&str, &ConnectorConfig)> {
        self.connectors
            .iter()
            .filter(|(_, c)| c.enabled)
            .map(|(n, c)| (n.as_str(), c))
    }
}

fn with_env_overrides(
    path: &Path,
    text: &str,
    env: &[(String, String)],
) -> Result<Config, ConfigError> {
    let source = config::Environment::with_prefix(ENV_PREFIX)
        .prefix_separator("__")
        .separator("__")
        .try_parsing(true)
        .list_separator(",")
        .with_list_parse_key("mapping.domains")
        .source(Some(env.iter().cloned().collect()));
    config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .add_source(source)
        .build()
        .and_then(|c| c.try_deserialize::<Config>())
        .map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: None,
            key: None,
            message: format!(
                "with the environment overrides {}: {e}",
                env.iter()
                    .map(|(k, _)| k.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
}

fn validate_imap(imap: &ImapConfig) -> Result<(), (&'static str, String)> {
    if !(1..=1000).contains(&imap.max_connections) {
        return Err((
            "max_connections",
            format!(
                "{} connections at work at once is out of range; give 1 to 1000 (default 8)",
                imap.max_connections
            ),
        ));
    }
    if imap.idle_connections > 100_000 {
        return Err((
            "idle_connections",
            format!(
                "{} idle connections is out of range; give 0 to 100000 (default 32), within the \
                 server's connection limit",
                imap.idle_connections
            ),
        ));
    }
    if imap.security == ImapSecurity::Plain {
        let loopback = imap.host == "localhost"
            || imap
                .host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if !(loopback && imap.allow_plaintext_loopback) {
            return Err((
                "security",
                format!(
                    "plain IMAP to {} would send passwords and mail unencrypted; use tls or \
                     starttls (plain is allowed only to a loopback address with \
                     allow_plaintext_loopback = true)",
                    imap.host
                ),
            ));
        }
    }
    match imap.auth {
        ImapAuthKind::Login if imap.password.is_none() => {
            Err(("password", "auth = \"login\" needs mailbox.password".into()))
        }
        ImapAuthKind::Xoauth2 => {
            for (key, present) in [
                (
                    "tenant_id",
                    imap.tenant_id.is_some() || imap.token_url.is_some(),
                ),
                ("client_id", imap.client_id.is_some()),
                ("client_secret", imap.client_secret.is_some()),
            ] {
                if !present {
                    return Err((key, format!("auth = \"xoauth2\" needs mailbox.{key}")));
                }
            }
            if let Some(url) = &imap.token_url {
                check_endpoint(url, true).map_err(|why| ("token_url", why))?;
            }
            Ok(())
        }
        ImapAuthKind::Login => Ok(()),
    }
}

fn validate_azure(azure: &AzureStageConfig) -> Result<(), (&'static str, String)> {
    let name_ok = |n: &str, max: usize| {
        (3..=max).contains(&n.len())
            && n.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !n.starts_with('-')
            && !n.ends_with('-')
            && !n.contains("--")
    };
    if !name_ok(&azure.account, 24) || azure.account.contains('-') {
        return Err((
            "account",
            format!(
                "'{}' is not a storage account name (3 to 24 lowercase letters and digits)",
                azure.account
            ),
        ));
    }
    if !name_ok(&azure.container, 63) {
        return Err(("container", format!("'{}' is not a container name (3 to 63 lowercase letters, digits and single hyphens)", azure.container)));
    }
    if let Some(endpoint) = &azure.endpoint {
        check_endpoint(endpoint, azure.allow_http_loopback).map_err(|why| ("endpoint", why))?;
    }
    let need = |present: bool, key: &'static str, auth: &str| {
        if present {
            Ok(())
        } else {
            Err((key, format!("auth = \"{auth}\" needs stage.{key}")))
        }
    };
    match azure.auth {
        AzureAuthKind::ClientSecret => {
            need(azure.tenant_id.is_some(), "tenant_id", "client-secret")?;
            need(azure.client_id.is_some(), "client_id", "client-secret")?;
            need(
                azure.client_secret.is_some(),
                "client_secret",
                "client-secret",
            )?;
        }
        AzureAuthKind::ClientCertificate => {
            need(azure.tenant_id.is_some(), "tenant_id", "client-certificate")?;
            need(azure.client_id.is_some(), "client_id", "client-certificate")?;
            need(
                azure.client_certificate.is_some(),
                "client_certificate",
                "client-certificate",
            )?;
        }
        AzureAuthKind::Sas => need(azure.sas.is_some(), "sas", "sas")?,
        AzureAuthKind::ManagedIdentity | AzureAuthKind::WorkloadIdentity => {}
    }
    Ok(())
}

/// Production endpoints must be https; plain http only to loopback, when allowed explicitly.
fn check_url(https: &HttpsConfig) -> Result<(), String> {
    check_endpoint(&https.url, https.allow_http_loopback)
}

fn check_endpoint(raw: &str, allow_http_loopback: bool) -> Result<(), String> {
    let url = reqwest::Url::parse(raw).map_err(|e| format!("'{raw}' is not a URL: {e}"))?;
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    };
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback && allow_http_loopback => Ok(()),
        "http" if loopback => Err(format!(
            "'{raw}' is plain http; set allow_http_loopback = true to allow it for a loopback \
             address (tests, the partner simulator, Azurite)"
        )),
        "http" => Err(format!(
            "'{raw}' is plain http; production endpoints must be https"
        )),
        other => Err(format!("scheme '{other}' is not https")),
    }
}

/// Checks a folder name is safe in every mailbox backend (Maildir++ uses '.' as separator).
pub fn check_folder_name(folder: &str) -> Result<(), String> {
    if folder.trim().is_empty() || folder.len() > 255 {
        return Err("folder name must be 1 to 255 characters".to_string());
    }
    if let Some(c) = folder
        .chars()
        .find(|c| c.is_control() || matches!(c, '.' | '/' | '\\' | '&' | '~' | '%' | '*'))
    {
        return Err(format!(
            "folder name '{folder}' contains {c:?}, which mailbox hierarchies reserve"
        ));
    }
    Ok(())
}

fn is_connector_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn is_domain(domain: &str) -> bool {
    domain.contains('.')
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

#[cfg(test)]
mod tests {

    /// Every secret key, written as a plain value: the error names the file, the line and
    /// the key, says how to reference a secret, and never holds the value.
    #[test]
    fn a_secret_written_inline_is_refused_without_repeating_it() {
        const VALUE: &str = "Hunter2-not-for-logs";
        let demo = include_str!("../../config/demo.toml");
        let stage = "[stage]\nkind = \"local\"\npath = \"var/stage\"\n";
        let mailbox = "[mailbox]\nkind = \"maildir\"\npath = \"var/mail\"\n";
        let azure = |line: &str| {
            format!(
                "[stage]\nkind = \"azure\"\naccount = \"a\"\ncontainer = \"c\"\n\
                 auth = \"client-secret\"\nclient_id = \"i\"\ntenant_id = \"t\"\n{line}\n"
            )
        };
        let imap = |line: &str| {
            format!(
                "[mailbox]\nkind = \"imap\"\nhost = \"127.0.0.1\"\nsecurity = \"plain\"\n\
                 allow_plaintext_loopback = true\nauth = \"login\"\nusername = \"{{mailbox}}\"\n{line}\n"
            )
        };
        let graph = format!(
            "[mailbox]\nkind = \"graph\"\ntenant_id = \"t\"\nclient_id = \"i\"\nclient_secret = \"{VALUE}\"\n"
        );
        let https = |line: &str| {
            format!(
                "[connectors.o2.source]\ntransport = \"https\"\nurl = \"https://partner.example/api\"\n\
                 username = \"u\"\n{line}\n"
            )
        };
        let cases: Vec<(String, &str)> = vec![
            (
                azure(&format!("client_secret = \"{VALUE}\"")),
                "stage.client_secret",
            ),
            (
                azure(&format!("client_certificate = \"{VALUE}\"")),
                "stage.client_certificate",
            ),
            (azure(&format!("sas = \"{VALUE}\"")), "stage.sas"),
            (imap(&format!("password = \"{VALUE}\"")), "mailbox.password"),
            (
                imap(&format!("client_secret = \"{VALUE}\"")),
                "mailbox.client_secret",
            ),
            (imap("password = 12345678"), "mailbox.password"),
            (graph.clone(), "mailbox.client_secret"),
            (
                https(&format!("password = \"{VALUE}\"")),
                "connectors.o2.source.password",
            ),
            (
                https(&format!("client_secret = \"{VALUE}\"")),
                "connectors.o2.source.client_secret",
            ),
            (
                https(&format!("api_key = [\"{VALUE}\"]")),
                "connectors.o2.source.api_key",
            ),
        ];
        for (section, key) in cases {
            let mut text = demo.replace(stage, "").replace(mailbox, "");
            let https_source = "[connectors.o2.source]\ntransport = \"drop\"\npath = \"fixtures/telemessage-o2\"\n";
            if section.starts_with("[connectors.o2.source]") {
                text = text.replace(https_source, "");
                text.push_str(stage);
                text.push_str(mailbox);
            } else if section.starts_with("[stage]") {
                text.push_str(mailbox);
            } else {
                text.push_str(stage);
            }
            text.push('\n');
            text.push_str(&section);
            let e = Config::from_toml(Path::new("site.toml"), &text, &[])
                .expect_err(key)
                .to_string();
            let want_line = text
                .lines()
                .position(|l| l.contains(VALUE) || l == "password = 12345678")
                .unwrap()
                + 1;
            assert!(
                e.starts_with(&format!("site.toml line {want_line}, key `{key}`")),
                "{key}: {e}"
            );
            assert!(
                e.contains("{ env = \"VARIABLE\" }") && e.contains("{ file = "),
                "{e}"
            );
            assert!(!e.contains(VALUE) && !e.contains("12345678"), "{key}: {e}");
        }
        // Set from the environment: the variable is named, the value is not repeated.
        let text = demo.replace(mailbox, &imap("password = { env = \"P\" }"));
        let env = [(
            "COMMS_ARCHIVER__MAILBOX__PASSWORD".to_string(),
            VALUE.to_string(),
        )];
        let e = Config::from_toml(Path::new("site.toml"), &text, &env)
            .expect_err("a plain value from the environment")
            .to_string();
        assert!(
            e.contains("COMMS_ARCHIVER__MAILBOX__PASSWORD") && e.contains("{ env = "),
            "{e}"
        );
        assert!(!e.contains(VALUE), "{e}");
    }

    use super::*;

    const GOOD: &str = r#"
[mapping]
default_region = "GB"
domains = ["contoso.com"]

[stage]
kind = "local"
path = "var/stage"

[mailbox]
kind = "maildir"
path = "var/mail"

[connectors.o2]
partner = "telemessage-o2"
mapping_csv = "config/mapping-o2.csv"

[connectors.o2.source]
transport = "drop"
path = "fixtures/telemessage-o2"
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(Path::new("test.toml"), text, &[])
    }

    #[test]
    fn parses_with_defaults() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.archiver.max_item_bytes, 10_485_760);
        assert_eq!(c.schedule.wake(), NaiveTime::from_hms_opt(4, 0, 0).unwrap());
        assert_eq!(
            c.connectors["o2"].folder(),
            "O2 SMS and Voice Network Archiver"
        );
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let text = GOOD.replace("[mailbox]\n", "[mailbox]\nbogus = 1\n");
        let e = parse(&text).unwrap_err();
        assert_eq!(e.line, Some(11), "{e}");
        assert_eq!(e.key.as_deref(), Some("mailbox.bogus"), "{e}");
        assert!(e.message.contains("unknown field `bogus`"), "{e}");
        assert!(e.to_string().starts_with("test.toml line 11"), "{e}");
    }

    #[test]
    fn semantic_errors_are_located() {
        let text = GOOD.replace("default_region = \"GB\"", "default_region = \"XX\"");
        let e = parse(&text).unwrap_err();
        assert_eq!(e.line, Some(3));
        assert_eq!(e.key.as_deref(), Some("mapping.default_region"));

        let text = GOOD.replace(
            "partner = \"telemessage-o2\"",
            "partner = \"telemessage-o2\"\nfolder = \"A.B\"",
        );
        let e = parse(&text).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("connectors.o2.folder"));
        assert_eq!(e.line, Some(16));
    }

    #[test]
    fn imap_connection_bounds_are_checked() {
        let imap = "[mailbox]\nkind = \"imap\"\nhost = \"imap.contoso.com\"\nauth = \"login\"\n\
                    password = { env = \"IMAP_PASSWORD\" }\n";
        let text = GOOD.replace("[mailbox]\nkind = \"maildir\"\npath = \"var/mail\"\n", imap);
        let c = parse(&text).unwrap();
        let MailboxConfig::Imap(settings) = &c.mailbox else {
            panic!("an IMAP mailbox")
        };
        assert_eq!(
            (settings.max_connections, settings.idle_connections),
            (8, 32)
        );

        let e = parse(&text.replace("auth =", "max_connections = 0\nauth =")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("mailbox.max_connections"), "{e}");
        assert!(e.message.contains("give 1 to 1000"), "{e}");
        let e = parse(&text.replace("auth =", "idle_connections = 200000\nauth =")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("mailbox.idle_connections"), "{e}");
    }

    #[test]
    fn secrets_are_read_from_env_or_file_and_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "s3cr3t-sentinel\n").unwrap();
        let from_file = SecretRef {
            env: None,
            file: Some(path),
        };
        let secret = from_file.resolve().unwrap();
        assert_eq!(secret.expose(), "s3cr3t-sentinel");
        assert!(!format!("{secret:?}").contains("s3cr3t"));

        let missing = SecretRef {
            env: Some("COMMS_ARCHIVER_TEST_UNSET_SECRET".into()),
            file: None,
        };
        let e = missing.resolve().unwrap_err();
        assert!(e.contains("COMMS_ARCHIVER_TEST_UNSET_SECRET"), "{e}");
        let both = SecretRef {
            env: Some("X".into()),
            file: Some("y".into()),
        };
        assert!(both.resolve().unwrap_err().contains("exactly one"));
    }

    #[test]
    fn environment_overrides_win() {
        let env = vec![
            (
                "COMMS_ARCHIVER__SCHEDULE__WAKE_TIME".to_string(),
                "05:30".to_string(),
            ),
            (
                "COMMS_ARCHIVER__CONNECTORS__O2__FOLDER".to_string(),
                "Texts".to_string(),
            ),
        ];
        let c = Config::from_toml(Path::new("t.toml"), GOOD, &env).unwrap();
        assert_eq!(c.schedule.wake_time, "05:30");
        assert_eq!(c.connectors["o2"].folder(), "Texts");

        let bad = vec![(
            "COMMS_ARCHIVER__ARCHIVER__MAX_ITEM_BYTES".to_string(),
            "lots".to_string(),
        )];
        let e = Config::from_toml(Path::new("t.toml"), GOOD, &bad).unwrap_err();
        assert!(
            e.message
                .contains("COMMS_ARCHIVER__ARCHIVER__MAX_ITEM_BYTES"),
            "{e}"
        );
    }
}

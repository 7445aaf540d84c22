//! The `[mailbox]` section: where messages are imported and how mailboxes are reached.

use crate::checks::{self, Invalid};
use crate::secret::SecretRef;
use serde::Deserialize;
use std::path::PathBuf;
use url::Url;

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
    #[serde(default, deserialize_with = "checks::de_optional_url")]
    pub graph_url: Option<Url>,
    #[serde(default, deserialize_with = "checks::de_optional_url")]
    pub token_url: Option<Url>,
    /// Allow plain-http overrides on a loopback address.
    #[serde(default)]
    pub allow_http_loopback: bool,
    /// Retries of a throttled or failing request. Default 6.
    #[serde(default = "default_graph_retries")]
    pub max_retries: usize,
    /// Seconds one request may take. Default 60.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// What may be uploaded to one mailbox (the bodies of POST, PUT and PATCH) in any
    /// `upload_window_secs`: Exchange's limit, 150 MB per 300 s, unless Microsoft changes it.
    #[serde(default = "default_upload_limit_mb")]
    pub upload_limit_mb: u64,
    #[serde(default = "default_upload_window_secs")]
    pub upload_window_secs: u64,
}

fn default_graph_retries() -> usize {
    6
}

fn default_upload_limit_mb() -> u64 {
    super::graph::DEFAULT_UPLOADS.most / 1_000_000
}

fn default_upload_window_secs() -> u64 {
    super::graph::DEFAULT_UPLOADS.window.as_secs()
}

impl GraphConfig {
    /// The upload limit the client paces each mailbox under.
    pub fn uploads(&self) -> super::graph::Limit {
        super::graph::Limit {
            most: self.upload_limit_mb.saturating_mul(1_000_000),
            window: std::time::Duration::from_secs(self.upload_window_secs),
        }
    }
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
    #[serde(default, deserialize_with = "checks::de_optional_url")]
    pub token_url: Option<Url>,
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
    #[serde(default = "default_timeout")]
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

    /// Where the tenant's tokens are asked for.
    pub fn token_url(self, tenant: &str) -> Result<Url, String> {
        let raw = format!("{}/{tenant}/oauth2/v2.0/token", self.login_host());
        Url::parse(&raw).map_err(|e| format!("'{tenant}' does not make a token URL: {e}"))
    }

    /// The Graph API's base URL, version included.
    pub fn graph_base(self) -> Result<Url, String> {
        let raw = format!("{}/v1.0", self.graph_host());
        Url::parse(&raw).map_err(|e| format!("'{raw}' is not a URL: {e}"))
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

fn default_timeout() -> u64 {
    60
}

impl MailboxConfig {
    /// Checks what the types cannot: endpoints, connection bounds, the credentials each
    /// authentication needs.
    pub fn validate(&self) -> Result<(), Invalid> {
        match self {
            MailboxConfig::Maildir { .. } => Ok(()),
            MailboxConfig::Imap(imap) => imap.validate(),
            MailboxConfig::Graph(graph) => {
                for (key, url) in [
                    ("graph_url", &graph.graph_url),
                    ("token_url", &graph.token_url),
                ] {
                    if let Some(url) = url {
                        checks::endpoint(url, graph.allow_http_loopback)
                            .map_err(|why| Invalid::new(key, why))?;
                    }
                }
                // A request carries at most 4 MB: the limit must let two through at once.
                if !(8..=1_000_000).contains(&graph.upload_limit_mb) {
                    return Err(Invalid::new(
                        "upload_limit_mb",
                        format!(
                            "{} MB is out of range; give 8 to 1000000 (default 150, Exchange \
                             Online's limit per mailbox)",
                            graph.upload_limit_mb
                        ),
                    ));
                }
                if !(1..=86_400).contains(&graph.upload_window_secs) {
                    return Err(Invalid::new(
                        "upload_window_secs",
                        format!(
                            "{} s is out of range; give 1 to 86400 (default 300, Exchange \
                             Online's window)",
                            graph.upload_window_secs
                        ),
                    ));
                }
                Ok(())
            }
        }
    }

    /// Copies in flight at once that suit the backend, unless `archiver.max_in_flight` says:
    /// a Maildir is a local disk, IMAP a few connections, and each Graph request waits on the
    /// network (four per mailbox may run at once).
    pub fn default_in_flight(&self) -> usize {
        match self {
            MailboxConfig::Maildir { .. } => 8,
            MailboxConfig::Imap(_) => 16,
            MailboxConfig::Graph(_) => 64,
        }
    }
}

impl ImapConfig {
    fn validate(&self) -> Result<(), Invalid> {
        let imap = self;
        if !(1..=1000).contains(&imap.max_connections) {
            return Err(Invalid::new(
                "max_connections",
                format!(
                    "{} connections at work at once is out of range; give 1 to 1000 (default 8)",
                    imap.max_connections
                ),
            ));
        }
        if imap.idle_connections > 100_000 {
            return Err(Invalid::new("idle_connections",
                format!(
                    "{} idle connections is out of range; give 0 to 100000 (default 32), within the \
                     server's connection limit",
                    imap.idle_connections
                ),
            ));
        }
        let plain_allowed = checks::is_loopback_host(&imap.host) && imap.allow_plaintext_loopback;
        if imap.security == ImapSecurity::Plain && !plain_allowed {
            return Err(Invalid::new(
                "security",
                format!(
                    "plain IMAP to {} would send passwords and mail unencrypted; use tls or \
                     starttls (plain is allowed only to a loopback address with \
                     allow_plaintext_loopback = true)",
                    imap.host
                ),
            ));
        }
        match imap.auth {
            ImapAuthKind::Login if imap.password.is_none() => Err(Invalid::new(
                "password",
                "auth = \"login\" needs mailbox.password",
            )),
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
                        return Err(Invalid::new(
                            key,
                            format!("auth = \"xoauth2\" needs mailbox.{key}"),
                        ));
                    }
                }
                if let Some(url) = &imap.token_url {
                    checks::endpoint(url, true).map_err(|why| Invalid::new("token_url", why))?;
                }
                Ok(())
            }
            ImapAuthKind::Login => Ok(()),
        }
    }
}

//! Mailbox sinks: one folder per connector under each mailbox's Inbox.

mod config;
pub mod graph;
pub mod imap;
mod maildir;
mod paced;
pub mod token;

pub use config::{GraphConfig, ImapAuthKind, ImapConfig, ImapSecurity, M365Cloud, MailboxConfig};
pub use graph::GraphMailboxes;
pub use imap::ImapMailboxes;
pub use maildir::MaildirTree;
pub use paced::Paced;

use crate::item::ItemKey;
use crate::secret::Secrets;
use async_trait::async_trait;
use chrono::{DateTime, Utc};

/// One copy of an item for one mailbox.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    /// The mailbox address (lowercase).
    pub mailbox: &'a str,
    /// The Inbox subfolder, e.g. "O2 SMS and Voice Network Archiver".
    pub folder: &'a str,
    pub key: &'a ItemKey,
    /// The item's own time: the message's received date in the mailbox.
    pub time: DateTime<Utc>,
    /// The rendered RFC 5322 message (shared, not copied, by the stores that keep it for
    /// a moment).
    pub message: &'a bytes::Bytes,
}

/// Why a mailbox did not take a message.
#[derive(Debug, thiserror::Error)]
pub enum MailboxError {
    /// The address has no mailbox: reported as a user mapping failure, not retried.
    #[error("mailbox {0} does not exist")]
    NoSuchMailbox(String),
    /// The server refuses this message for good (too large, malformed): reported, not retried.
    #[error("{mailbox} refused the message: {reason}")]
    Rejected { mailbox: String, reason: String },
    /// The server or store is unreachable or failing: the day stays open and is retried.
    #[error("{0}")]
    Unavailable(String),
}

/// How deliveries suit a store: how many copies of one mailbox go in at once, how many
/// mailboxes at once at most (None: as many as the run's `max_in_flight` allows), and how
/// many of a mailbox's copies one request can carry ([`Mailbox::append_all`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryShape {
    pub per_mailbox: usize,
    pub mailboxes: Option<usize>,
    pub batch: usize,
}

/// A store of mailboxes that messages are imported into.
#[async_trait]
pub trait Mailbox: Send + Sync {
    /// Whether the delivery's message is already in its folder (used when recovering).
    async fn contains(&self, delivery: &Delivery<'_>) -> Result<bool, MailboxError>;
    /// Imports the message into the folder as read, with the item's time as its date;
    /// creates the folder when needed. Importing a message that is there already is a no-op.
    async fn append(&self, delivery: &Delivery<'_>) -> Result<(), MailboxError>;
    /// Imports several messages into one folder of one mailbox (every delivery names the
    /// same), as `append` does each; where the store takes them in one request, all of them
    /// or none. An error leaves it unknown which went in only when the store said nothing
    /// (`Unavailable`); a refusal (`Rejected`, `NoSuchMailbox`) means none did.
    async fn append_all(&self, deliveries: &[Delivery<'_>]) -> Result<(), MailboxError> {
        for delivery in deliveries {
            self.append(delivery).await?;
        }
        Ok(())
    }
    /// Where the mailboxes are, for logs (never with credentials).
    fn describe(&self) -> String;
    /// Which store copies land in: backend and server, tree or tenant (never credentials).
    /// Import records carry it, so a copy counts as imported only where it was imported; a
    /// stage kept while `[mailbox]` points elsewhere imports into the new destination.
    fn destination(&self) -> String;
    /// Lets go of connections kept open between imports (at the end of a run).
    async fn close_idle(&self) {}
    /// How copies are best delivered: one at a time per mailbox unless said otherwise.
    fn delivery_shape(&self) -> DeliveryShape {
        DeliveryShape {
            per_mailbox: 1,
            mailboxes: None,
            batch: 1,
        }
    }

    /// Waits until the store takes `bytes` more for `mailbox` without pacing them, and keeps
    /// that room for one copy until the [`Paced`] is dropped (its requests run within
    /// [`Paced::within`]). A copy waits here before it takes its room in the budget of bytes
    /// in flight, so that a mailbox its store paces holds no room while it waits. A store
    /// that does not pace uploads keeps nothing.
    async fn pace(&self, mailbox: &str, bytes: u64) -> Paced {
        let _ = (mailbox, bytes);
        Paced::unpaced()
    }

    /// Whether copies can go in (`check`): a local tree that takes writes; with `connect`,
    /// a server or tenant that lets the archiver sign in as `sample` (a mapped mailbox).
    /// What was found, in words.
    async fn probe(&self, sample: Option<&str>, connect: bool) -> Result<String, MailboxError> {
        let _ = (sample, connect);
        Ok(format!("{}: not probed", self.describe()))
    }
}

/// Builds the mailbox backend its section names. Secrets are read here.
pub fn build(
    config: &MailboxConfig,
    secrets: &Secrets,
) -> crate::Result<std::sync::Arc<dyn Mailbox>> {
    let imap = match config {
        MailboxConfig::Maildir { path } => return Ok(std::sync::Arc::new(MaildirTree::new(path))),
        MailboxConfig::Graph(graph) => return build_graph(graph, secrets),
        MailboxConfig::Imap(imap) => imap,
    };
    let secret = |key: &str, reference: &Option<crate::secret::SecretRef>| {
        secrets.resolve(&format!("mailbox.{key}"), reference.as_ref())
    };
    let auth = match imap.auth {
        ImapAuthKind::Login => imap::ImapAuth::Login {
            username: imap.username.clone(),
            password: secret("password", &imap.password)?,
            master_user: imap.master_user.clone(),
        },
        ImapAuthKind::Xoauth2 => {
            let url = match &imap.token_url {
                Some(url) => url.clone(),
                None => imap
                    .cloud
                    .token_url(imap.tenant_id.as_deref().unwrap_or_default())
                    .map_err(|why| secrets.error("mailbox.tenant_id", why))?,
            };
            let scope = imap
                .scope
                .clone()
                .unwrap_or_else(|| imap.cloud.outlook_scope().to_string());
            let tokens = token::TokenSource::new(
                url,
                imap.client_id.as_deref().unwrap_or_default(),
                secret("client_secret", &imap.client_secret)?,
                &scope,
            )
            .map_err(|why| secrets.error("mailbox", why))?;
            imap::ImapAuth::XOAuth2(std::sync::Arc::new(tokens))
        }
    };
    let security = match imap.security {
        ImapSecurity::Tls => imap::Security::Tls,
        ImapSecurity::Starttls => imap::Security::StartTls,
        ImapSecurity::Plain => imap::Security::Plain,
    };
    let settings = imap::ImapSettings {
        host: imap.host.clone(),
        port: imap.port.unwrap_or(if security == imap::Security::Tls {
            993
        } else {
            143
        }),
        security,
        auth,
        max_connections: imap.max_connections,
        idle_connections: imap.idle_connections,
        timeout: std::time::Duration::from_secs(imap.timeout_secs),
    };
    let mailboxes = ImapMailboxes::new(settings).map_err(|why| secrets.error("mailbox", why))?;
    Ok(std::sync::Arc::new(mailboxes))
}

fn build_graph(
    graph: &GraphConfig,
    secrets: &Secrets,
) -> crate::Result<std::sync::Arc<dyn Mailbox>> {
    let secret = secrets.resolve("mailbox.client_secret", Some(&graph.client_secret))?;
    let token_url = match &graph.token_url {
        Some(url) => url.clone(),
        None => graph
            .cloud
            .token_url(&graph.tenant_id)
            .map_err(|why| secrets.error("mailbox.tenant_id", why))?,
    };
    let base = match &graph.graph_url {
        Some(url) => url.clone(),
        None => graph
            .cloud
            .graph_base()
            .map_err(|why| secrets.error("mailbox.cloud", why))?,
    };
    let scope = format!("{}/.default", graph.cloud.graph_host());
    let tokens = token::TokenSource::new(token_url, &graph.client_id, secret, &scope)
        .map_err(|why| secrets.error("mailbox", why))?;
    let mailboxes = GraphMailboxes::new(graph::GraphSettings {
        tenant: graph.tenant_id.clone(),
        base,
        tokens: std::sync::Arc::new(tokens),
        max_retries: graph.max_retries,
        timeout: std::time::Duration::from_secs(graph.timeout_secs),
        uploads: graph.uploads(),
    })
    .map_err(|why| secrets.error("mailbox", why))?;
    Ok(std::sync::Arc::new(mailboxes))
}

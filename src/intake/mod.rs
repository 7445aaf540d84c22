//! The SMTP intake: partners that deliver by email (TeleMessage's SMTP destination, Merge1)
//! send each message here. A message is answered 250 only once it is kept for good in the
//! stage ([`store`]); the day's run then reads the day's intake like a drop
//! (`sources::intake`), reconciling against what the intake recorded as accepted.
//!
//! The SMTP server is our own small state machine ([`command`] parses, [`session`] serves):
//! what it must promise (no acknowledgement before durability, no half-written message
//! ever read, TLS before AUTH) is simpler to keep in sight than in a general mail server.

pub mod command;
mod config;
mod listener;
pub mod session;
pub mod store;

pub use config::{AuthConfig, IntakeConfig, Network, TlsConfig};
pub use listener::{serve, tls_config};
pub use store::Keeper;

use crate::secret::Secret;
use crate::sources::eml::EmlFormat;
use crate::sources::RecordFormat;
use std::sync::Arc;
use std::time::Duration;

/// The settings a session works with, resolved from [`IntakeConfig`].
pub struct Settings {
    pub hostname: String,
    pub max_message_bytes: u64,
    pub require_tls: bool,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub auth: Option<Credentials>,
    pub idle: Duration,
    pub networks: Vec<Network>,
    pub max_connections: usize,
    /// Whether TLS clients must present a certificate (`client_ca`).
    pub client_certificates: bool,
    /// What every session's messages may hold in memory together.
    pub max_buffered_bytes: u64,
}

/// A session's share of [`Settings::max_buffered_bytes`], given back when dropped.
pub struct Reservation {
    held: u64,
    buffered: Arc<std::sync::atomic::AtomicU64>,
    budget: u64,
}

impl Reservation {
    /// Takes `bytes` more of the budget; false (taking nothing) when it is spent.
    pub fn grow(&mut self, bytes: usize) -> bool {
        use std::sync::atomic::Ordering;
        let bytes = bytes as u64;
        let taken = self
            .buffered
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
                (now + bytes <= self.budget).then_some(now + bytes)
            });
        if taken.is_ok() {
            self.held += bytes;
        }
        taken.is_ok()
    }

    /// Gives back everything taken.
    pub fn release(&mut self) {
        self.buffered.fetch_sub(
            std::mem::take(&mut self.held),
            std::sync::atomic::Ordering::AcqRel,
        );
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.release();
    }
}

/// The one account AUTH accepts.
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: Arc<Secret>,
}

impl Credentials {
    pub fn new(username: String, password: Secret) -> Credentials {
        Credentials {
            username,
            password: Arc::new(password),
        }
    }
}

/// A recipient address and the connector its messages belong to.
#[derive(Debug, Clone)]
pub struct Route {
    /// Lowercase.
    pub recipient: String,
    pub connector: String,
    pub format: EmlFormat,
}

/// What became of a message after DATA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// Kept (`again`: a message of the same id was kept before).
    Kept { again: bool },
    /// The message cannot be archived as it is (550, with why).
    Refused(String),
    /// It could not be kept now (451: the sender retries).
    NotKept(String),
}

/// The intake: its settings, its routes and where it keeps messages.
pub struct Intake {
    pub settings: Settings,
    routes: Vec<Route>,
    keeper: Keeper,
    /// The bytes every session's messages hold now.
    buffered: Arc<std::sync::atomic::AtomicU64>,
}

impl Intake {
    pub fn new(settings: Settings, routes: Vec<Route>, keeper: Keeper) -> Intake {
        Intake {
            settings,
            routes,
            keeper,
            buffered: Arc::default(),
        }
    }

    /// An empty share of the buffer budget, for one message.
    pub fn reservation(&self) -> Reservation {
        Reservation {
            held: 0,
            buffered: self.buffered.clone(),
            budget: self.settings.max_buffered_bytes,
        }
    }

    /// What the intake is, for `check`: its security and its routes, never a secret.
    pub fn describe(&self) -> String {
        let s = &self.settings;
        let tls = match (&s.tls, s.require_tls) {
            (None, _) => "plain SMTP (no STARTTLS)",
            (Some(_), false) => "STARTTLS offered",
            (Some(_), true) => "STARTTLS required",
        };
        format!(
            "{tls}{}{}, {} recipient(s) routed, {} client network(s) allowed, up to {} bytes",
            if s.client_certificates {
                ", client certificates required"
            } else {
                ""
            },
            if s.auth.is_some() {
                ", AUTH after STARTTLS"
            } else {
                ""
            },
            self.routes.len(),
            s.networks.len(),
            s.max_message_bytes
        )
    }

    /// The route of a recipient address, compared without case.
    pub fn route(&self, recipient: &str) -> Option<&Route> {
        let recipient = recipient.to_ascii_lowercase();
        self.routes.iter().find(|r| r.recipient == recipient)
    }

    /// Reads the message as each connector's format does, then keeps it for each: a message
    /// any of them cannot read is refused whole, with the reason.
    pub async fn accept(&self, connectors: &[String], message: &[u8]) -> Accepted {
        if message.contains(&0) {
            return Accepted::Refused(
                "the message holds NUL octets, which RFC 5322 does not allow".into(),
            );
        }
        let mut filed = Vec::new();
        for connector in connectors {
            let Some(route) = self.routes.iter().find(|r| &r.connector == connector) else {
                continue;
            };
            match route.format.decode(message) {
                Ok(record) => filed.push((connector, record.id, record.time)),
                Err(why) => {
                    metrics::counter!("comms_archiver_intake_messages_total", "connector" => connector.clone(), "outcome" => "refused").increment(1);
                    tracing::warn!(connector = %connector, reason = %why, "refused a message the connector cannot read (550)");
                    return Accepted::Refused(format!("cannot be archived: {why}"));
                }
            }
        }
        let mut again = true;
        for (connector, id, time) in filed {
            match self.keeper.keep(connector, &id, time, message).await {
                Ok(kept) => {
                    again &= kept == store::Kept::Again;
                    let outcome = match kept {
                        store::Kept::New => "kept",
                        store::Kept::Again => "kept_again",
                    };
                    metrics::counter!("comms_archiver_intake_messages_total", "connector" => connector.clone(), "outcome" => outcome).increment(1);
                    tracing::debug!(connector = %connector, outcome, bytes = message.len(), "message kept");
                }
                Err(why) => {
                    metrics::counter!("comms_archiver_intake_messages_total", "connector" => connector.clone(), "outcome" => "not_kept").increment(1);
                    tracing::error!(connector = %connector, error = %why, "could not keep a message; told the sender to retry (451)");
                    return Accepted::NotKept(
                        "the message could not be kept just now; please retry".into(),
                    );
                }
            }
        }
        Accepted::Kept { again }
    }
}

#[cfg(test)]
mod tests;

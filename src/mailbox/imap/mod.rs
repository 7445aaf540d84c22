//! IMAP mailboxes: Exchange Online (XOAUTH2 with an app-only token) or any IMAP server
//! (LOGIN with per-mailbox or master credentials).
//!
//! Per mailbox, the connector's folder is found or created under INBOX with the server's
//! hierarchy delimiter, and each message is APPENDed with `\Seen` and INTERNALDATE = the
//! item's time. A bounded pool of connections serves all mailboxes; a connection that drops is
//! replaced. When recovering after a crash, a UID SEARCH for the item key header runs before
//! an append, confirmed against the archiver's own header block of each hit, so nothing lands
//! twice and nothing a partner wrote passes for an import (the ledger stays the primary guard:
//! Exchange's header search is best effort).

mod append;
mod stream;
mod syntax;

use append::{append_in_one, holds, Appended};
use stream::Stream;
use syntax::internal_date;
pub use syntax::modified_utf7;

use super::token::TokenSource;
use super::{Delivery, Mailbox, MailboxError};
use crate::secret::Secret;
use async_imap::{Client, Session};
use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore};

/// How the connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// TLS from the first byte (port 993).
    Tls,
    /// Plain connection upgraded with STARTTLS (port 143).
    StartTls,
    /// No TLS: only to a loopback address, by explicit configuration.
    Plain,
}

/// How each mailbox logs in.
pub enum ImapAuth {
    /// LOGIN as `username` (with `{mailbox}` replaced by the address) and a password; with a
    /// master user, as `<mailbox>*<master>` with the master's password (Dovecot).
    Login {
        username: String,
        password: Secret,
        master_user: Option<String>,
    },
    /// SASL XOAUTH2 with an app-only token, one login per mailbox, one token for all.
    XOAuth2(Arc<TokenSource>),
}

/// Where and how to connect.
pub struct ImapSettings {
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub auth: ImapAuth,
    /// Connections working at once, over all mailboxes.
    pub max_connections: usize,
    /// Logged-in connections kept between copies, over all mailboxes, so that a mailbox's next
    /// copy needs no new login.
    pub idle_connections: usize,
    pub timeout: Duration,
}

/// How long a connection may wait idle before it is logged out rather than used: servers end
/// idle sessions after about 30 minutes (RFC 3501's autologout), and one the server ended
/// would only fail and be replaced.
const IDLE_FOR_AT_MOST: Duration = Duration::from_secs(10 * 60);

type ImapSession = Session<Stream>;

/// The XOAUTH2 exchange: the initial response, then an empty answer to an error challenge.
struct XOAuth2 {
    response: String,
    sent: bool,
}

impl async_imap::Authenticator for &mut XOAuth2 {
    type Response = String;
    fn process(&mut self, _challenge: &[u8]) -> String {
        if self.sent {
            String::new()
        } else {
            self.sent = true;
            self.response.clone()
        }
    }
}

/// A logged-in connection waiting for its mailbox's next copy.
struct Idle {
    mailbox: String,
    since: std::time::Instant,
    session: ImapSession,
}

/// A connection in use, with its place in the pool.
struct Lease {
    session: ImapSession,
    _permit: OwnedSemaphorePermit,
}

/// The mailboxes of one IMAP server.
pub struct ImapMailboxes {
    settings: ImapSettings,
    tls: tokio_rustls::TlsConnector,
    /// One per connection at work: never more than `max_connections` at once.
    permits: Arc<Semaphore>,
    /// Logged-in connections not in use, longest idle first, with their mailbox and since when
    /// they wait; never more than `idle_connections`, however many mailboxes a day touches.
    idle: Mutex<std::collections::VecDeque<Idle>>,
    delimiters: Mutex<HashMap<String, String>>,
    folders: Mutex<HashSet<(String, String)>>,
    /// Whether the server takes several messages in one APPEND (RFC 3502 MULTIAPPEND) sent
    /// without waiting for a continuation per message (RFC 7888 LITERAL+): asked once.
    multiappend: Mutex<Option<bool>>,
}

/// Messages of one mailbox sent in one APPEND at most, where the server takes several.
const BATCH: usize = 32;

/// Whether an error means the connection is unusable (and the operation may be retried on a
/// new one).
fn broken(e: &async_imap::error::Error) -> bool {
    use async_imap::error::Error;
    matches!(e, Error::Io(_) | Error::ConnectionLost | Error::Parse(_))
}

impl ImapMailboxes {
    pub fn new(settings: ImapSettings) -> Result<ImapMailboxes, String> {
        use rustls_platform_verifier::ConfigVerifierExt;
        let config = rustls::ClientConfig::with_platform_verifier()
            .map_err(|e| format!("cannot load the system's certificate store: {e}"))?;
        Ok(ImapMailboxes {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            permits: Arc::new(Semaphore::new(settings.max_connections.max(1))),
            settings,
            idle: Mutex::new(std::collections::VecDeque::new()),
            delimiters: Mutex::new(HashMap::new()),
            folders: Mutex::new(HashSet::new()),
            multiappend: Mutex::new(None),
        })
    }

    fn unavailable(&self, mailbox: &str, what: impl std::fmt::Display) -> MailboxError {
        MailboxError::Unavailable(format!(
            "IMAP {}:{} for {mailbox}: {what}",
            self.settings.host, self.settings.port
        ))
    }

    async fn tls(&self, tcp: TcpStream) -> std::io::Result<Stream> {
        let name = rustls::pki_types::ServerName::try_from(self.settings.host.clone())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        Ok(Stream::Tls(Box::new(self.tls.connect(name, tcp).await?)))
    }

    /// A new authenticated session for a mailbox.
    async fn connect(&self, mailbox: &str) -> Result<ImapSession, MailboxError> {
        let s = &self.settings;
        let tcp = TcpStream::connect((s.host.as_str(), s.port))
            .await
            .map_err(|e| self.unavailable(mailbox, format!("cannot connect: {e}")))?;
        let stream = match s.security {
            Security::Tls => self
                .tls(tcp)
                .await
                .map_err(|e| self.unavailable(mailbox, format!("TLS: {e}")))?,
            Security::Plain | Security::StartTls => Stream::Plain(tcp),
        };
        let mut client = Client::new(stream);
        client
            .read_response()
            .await
            .map_err(|e| self.unavailable(mailbox, format!("no greeting: {e}")))?;
        if s.security == Security::StartTls {
            client
                .run_command_and_check_ok("STARTTLS", None)
                .await
                .map_err(|e| self.unavailable(mailbox, format!("STARTTLS refused: {e}")))?;
            let Stream::Plain(tcp) = client.into_inner() else {
                unreachable!("STARTTLS starts on a plain connection")
            };
            let stream = self
                .tls(tcp)
                .await
                .map_err(|e| self.unavailable(mailbox, format!("TLS: {e}")))?;
            client = Client::new(stream);
        }
        match &s.auth {
            ImapAuth::Login {
                username,
                password,
                master_user,
            } => {
                let user = match master_user {
                    Some(master) => format!("{mailbox}*{master}"),
                    None => username.replace("{mailbox}", mailbox),
                };
                client
                    .login(&user, password.expose())
                    .await
                    .map_err(|(e, _)| self.login_failed(mailbox, &user, e))
            }
            ImapAuth::XOAuth2(tokens) => {
                // A refused token is fetched anew once: it may have been revoked or expired.
                let mut client = Some(client);
                for attempt in 0..2 {
                    let token = tokens
                        .token()
                        .await
                        .map_err(|why| self.unavailable(mailbox, why))?;
                    let mut auth = XOAuth2 {
                        response: format!("user={mailbox}\x01auth=Bearer {token}\x01\x01"),
                        sent: false,
                    };
                    let current = client.take().expect("handed back after a refusal");
                    match current.authenticate("XOAUTH2", &mut auth).await {
                        Ok(session) => return Ok(session),
                        Err((e, back)) if attempt == 0 => {
                            tracing::info!(mailbox, error = %e, "XOAUTH2 refused; fetching a new token");
                            tokens.invalidate().await;
                            client = Some(back);
                        }
                        Err((e, _)) => return Err(self.login_failed(mailbox, mailbox, e)),
                    }
                }
                unreachable!("the loop returns")
            }
        }
    }

    fn login_failed(&self, mailbox: &str, user: &str, e: async_imap::error::Error) -> MailboxError {
        match e {
            async_imap::error::Error::No(why) | async_imap::error::Error::Bad(why) => {
                self.unavailable(mailbox, format!("login as {user} refused: {why}; check the credentials and the mailbox permission"))
            }
            other => self.unavailable(mailbox, format!("login as {user} failed: {other}")),
        }
    }

    /// A session for the mailbox: its idle one, or a new one once fewer than `max_connections`
    /// are at work.
    async fn lease(&self, mailbox: &str) -> Result<Lease, MailboxError> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let idle = {
            let mut idle = self.idle.lock().await;
            // Too long idle: the server may have ended them already.
            while idle
                .front()
                .is_some_and(|i| i.since.elapsed() > IDLE_FOR_AT_MOST)
            {
                let stale = idle.pop_front().expect("checked");
                tokio::spawn(log_out(stale.session, self.settings.timeout));
            }
            let mine = idle.iter().rposition(|i| i.mailbox == mailbox);
            mine.and_then(|i| idle.remove(i)).map(|i| i.session)
        };
        let session = match idle {
            Some(session) => session,
            None => tokio::time::timeout(self.settings.timeout, self.connect(mailbox))
                .await
                .map_err(|_| self.unavailable(mailbox, "no answer in time while connecting"))??,
        };
        Ok(Lease {
            session,
            _permit: permit,
        })
    }

    /// Keeps a connection for the mailbox's next copy; the longest idle one is logged out when
    /// more than `idle_connections` would wait.
    async fn give_back(&self, mailbox: &str, lease: Lease) {
        let mut idle = self.idle.lock().await;
        idle.push_back(Idle {
            mailbox: mailbox.to_string(),
            since: std::time::Instant::now(),
            session: lease.session,
        });
        while idle.len() > self.settings.idle_connections {
            let oldest = idle.pop_front().expect("longer than the bound");
            tokio::spawn(log_out(oldest.session, self.settings.timeout));
        }
    }

    fn failure(&self, mailbox: &str, e: async_imap::error::Error) -> MailboxError {
        match e {
            async_imap::error::Error::No(why)
                if why.contains("TOOBIG") || why.to_ascii_lowercase().contains("too large") =>
            {
                MailboxError::Rejected {
                    mailbox: mailbox.to_string(),
                    reason: format!("the server refused the message: {why}"),
                }
            }
            other => self.unavailable(mailbox, other),
        }
    }

    /// Runs `op` on a leased session; a broken connection is replaced and `op` tried once more,
    /// told by its last argument that it is the second try.
    async fn with_session<T, F>(&self, mailbox: &str, op: F) -> Result<T, MailboxError>
    where
        F: for<'s> Fn(
            &'s Self,
            &'s mut ImapSession,
            bool,
        ) -> Pin<
            Box<dyn std::future::Future<Output = Result<T, async_imap::error::Error>> + Send + 's>,
        >,
    {
        for attempt in 0..2 {
            let mut lease = self.lease(mailbox).await?;
            let outcome = tokio::time::timeout(
                self.settings.timeout,
                op(self, &mut lease.session, attempt > 0),
            )
            .await;
            match outcome {
                Ok(Ok(value)) => {
                    self.give_back(mailbox, lease).await;
                    return Ok(value);
                }
                Ok(Err(e)) if broken(&e) && attempt == 0 => reconnect(
                    mailbox,
                    "IMAP connection lost; reconnected and tried again",
                    format!("{mailbox}: {e}"),
                ),
                Ok(Err(e)) => {
                    // A NO keeps the connection usable; anything else retires it.
                    if matches!(e, async_imap::error::Error::No(_)) {
                        self.give_back(mailbox, lease).await;
                    }
                    return Err(self.failure(mailbox, e));
                }
                Err(_) if attempt == 0 => reconnect(
                    mailbox,
                    "IMAP server did not answer in time; reconnected and tried again",
                    mailbox.to_string(),
                ),
                Err(_) => return Err(self.unavailable(mailbox, "no answer in time")),
            }
        }
        Err(self.unavailable(mailbox, "the connection dropped twice"))
    }
}

/// The one retry IMAP makes: the operation again at once, on a new connection.
fn reconnect(mailbox: &str, what: &str, detail: String) {
    crate::events::Retry {
        side: "mailbox",
        kind: "imap_reconnect",
        what: what.to_string(),
        detail,
        scope: mailbox,
        attempt: 1,
        wait: Duration::ZERO,
    }
    .emit();
}

/// Closes an idle connection politely; a server that does not answer is simply left.
async fn log_out(mut session: ImapSession, timeout: Duration) {
    let _ = tokio::time::timeout(timeout, session.logout()).await;
}

#[async_trait::async_trait]
impl Mailbox for ImapMailboxes {
    async fn probe(&self, sample: Option<&str>, connect: bool) -> Result<String, MailboxError> {
        let server = format!("IMAP {}:{}", self.settings.host, self.settings.port);
        match (connect, sample) {
            (false, _) => Ok(format!(
                "{server}: not contacted (check --connect signs in)"
            )),
            (true, None) => Ok(format!(
                "{server}: not signed in, no mapping CSV names a mailbox to sign in as"
            )),
            (true, Some(mailbox)) => {
                let session = tokio::time::timeout(self.settings.timeout, self.connect(mailbox))
                    .await
                    .map_err(|_| self.unavailable(mailbox, "no answer in time"))??;
                log_out(session, self.settings.timeout).await;
                Ok(format!("{server}: signed in for {mailbox}"))
            }
        }
    }

    async fn contains(&self, d: &Delivery<'_>) -> Result<bool, MailboxError> {
        let (mailbox, folder) = (d.mailbox.to_string(), d.folder.to_string());
        let item_key = d.key.to_string();
        self.with_session(d.mailbox, move |this, session, _| {
            let (mailbox, folder, item_key) = (mailbox.clone(), folder.clone(), item_key.clone());
            Box::pin(async move {
                let full = this.folder(session, &mailbox, &folder).await?;
                session.examine(&full).await?;
                holds(session, &item_key).await
            })
        })
        .await
    }

    async fn append(&self, d: &Delivery<'_>) -> Result<(), MailboxError> {
        self.append_all(std::slice::from_ref(d)).await
    }

    /// Several copies of one mailbox on one connection: in one APPEND where the server takes
    /// it (Dovecot does; Exchange does not), else one APPEND after the other.
    async fn append_all(&self, deliveries: &[Delivery<'_>]) -> Result<(), MailboxError> {
        let Some(first) = deliveries.first() else {
            return Ok(());
        };
        let (mailbox, folder) = (first.mailbox.to_string(), first.folder.to_string());
        debug_assert!(deliveries
            .iter()
            .all(|d| d.mailbox == first.mailbox && d.folder == first.folder));
        let messages: Arc<[Appended]> = deliveries
            .iter()
            .map(|d| Appended {
                item_key: d.key.to_string(),
                date: internal_date(d.time),
                message: d.message.clone(),
            })
            .collect();
        self.with_session(first.mailbox, move |this, session, retry| {
            let (mailbox, folder, messages) = (mailbox.clone(), folder.clone(), messages.clone());
            Box::pin(async move {
                let full = this.folder(session, &mailbox, &folder).await?;
                let mut left: Vec<&Appended> = messages.iter().collect();
                // The connection broke during the first try: some (or, in one APPEND, all)
                // may be stored already.
                if retry {
                    session.examine(&full).await?;
                    let mut missing = Vec::new();
                    for appended in left {
                        if !holds(session, &appended.item_key).await? {
                            missing.push(appended);
                            continue;
                        }
                        tracing::info!(mailbox, item_key = appended.item_key,
                            "the message arrived before the connection broke; not appending it again");
                        crate::incidents::note(
                            "mailbox",
                            "message stored before the connection broke; not appended again",
                            || format!("{mailbox}: {}", appended.item_key),
                        );
                    }
                    left = missing;
                }
                if left.len() > 1 && this.takes_multiappend(session).await? {
                    return append_in_one(session, &full, &left).await;
                }
                for appended in left {
                    session
                        .append(&full, Some("(\\Seen)"), Some(&appended.date), &*appended.message)
                        .await?;
                }
                Ok(())
            })
        })
        .await
    }

    /// Logs out every idle connection (the next run is a day away).
    async fn close_idle(&self) {
        let idle: Vec<Idle> = self.idle.lock().await.drain(..).collect();
        let timeout = self.settings.timeout;
        futures::future::join_all(idle.into_iter().map(|i| log_out(i.session, timeout))).await;
    }

    /// One connection per mailbox, and never more mailboxes at once than can stay logged in
    /// between their copies: each mailbox logs in once for all its copies, sent up to
    /// `BATCH` at a time.
    fn delivery_shape(&self) -> super::DeliveryShape {
        let s = &self.settings;
        let mailboxes = s.max_connections.min(s.idle_connections).max(1);
        super::DeliveryShape {
            per_mailbox: 1,
            mailboxes: Some(mailboxes),
            batch: BATCH,
        }
    }

    fn describe(&self) -> String {
        format!("IMAP {}:{}", self.settings.host, self.settings.port)
    }

    fn destination(&self) -> String {
        format!(
            "imap {}:{}",
            self.settings.host.to_ascii_lowercase(),
            self.settings.port
        )
    }
}

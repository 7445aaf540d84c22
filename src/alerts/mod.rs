//! Nobody left to find out alone: after each run (a wake of the daemon, a `once`, a
//! `backfill`) a digest of what needs a person goes to the admins, by email over SMTP and by
//! webhook, each optional. One digest per run, never one per item; a digest that cannot be
//! sent is kept in the stage's state and sent again after the next run, counted in
//! `/metrics`, and never stops the archiving.

mod config;
mod digest;

pub use config::{AlertsConfig, EmailConfig, SmtpSecurity, WebhookConfig};
pub use digest::{gather, ConnectorDigest, DayDigest, Digest};

use crate::secret::{Secret, Secrets};
use crate::stage::Stage;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::sync::Arc;
use std::time::Duration;

/// The channels the digest goes to.
pub struct Alerter {
    email: Option<(EmailConfig, Option<Secret>)>,
    webhook: Option<(Secret, WebhookConfig)>,
}

/// Where an unsent digest waits for the next run, per channel.
fn pending_key(channel: &str) -> String {
    format!("alerts/pending/{channel}.json")
}

impl Alerter {
    /// The channels the section configures; None when it configures none.
    pub fn build(config: &AlertsConfig, secrets: &Secrets) -> crate::Result<Option<Alerter>> {
        let email = match &config.email {
            Some(email) => {
                let password = match &email.password {
                    Some(p) => Some(secrets.resolve("alerts.email.password", Some(p))?),
                    None => None,
                };
                Some((email.clone(), password))
            }
            None => None,
        };
        let webhook = match &config.webhook {
            Some(hook) => {
                let url = secrets.resolve("alerts.webhook.url", Some(&hook.url))?;
                let parsed = url::Url::parse(url.expose().trim()).map_err(|e| {
                    secrets.error("alerts.webhook.url", format!("is not a URL: {e}"))
                })?;
                crate::checks::endpoint(&parsed, hook.allow_http_loopback)
                    .map_err(|why| secrets.error("alerts.webhook.url", strip_url(&why)))?;
                Some((url, hook.clone()))
            }
            None => None,
        };
        Ok((email.is_some() || webhook.is_some()).then_some(Alerter { email, webhook }))
    }

    /// Sends what waits from earlier runs, then `digest` if it needs a person. A channel that
    /// fails keeps its digest for the next run.
    pub async fn send(&self, stage: &Arc<dyn Stage>, digest: &Digest) {
        let channels: [(&str, bool); 2] = [
            ("email", self.email.is_some()),
            ("webhook", self.webhook.is_some()),
        ];
        for (channel, configured) in channels {
            if !configured {
                continue;
            }
            let key = pending_key(channel);
            let waiting: Option<Digest> = match stage.get(&key).await {
                Ok(Some(bytes)) => serde_json::from_slice(&bytes).ok(),
                _ => None,
            };
            let mut outbox: Vec<&Digest> = waiting.iter().collect();
            if digest.needs_a_person() {
                outbox.push(digest);
            }
            let mut unsent = None;
            for d in outbox {
                let sent = match channel {
                    "email" => self.email(d).await,
                    _ => self.webhook(d).await,
                };
                let outcome = if sent.is_ok() { "sent" } else { "failed" };
                metrics::counter!("comms_archiver_digests_total", "channel" => channel, "outcome" => outcome)
                    .increment(1);
                match sent {
                    Ok(()) => tracing::info!(channel, "digest sent"),
                    Err(why) => {
                        tracing::warn!(channel, error = %why,
                            "the digest could not be sent; it is sent again after the next run");
                        unsent = Some(d.clone());
                    }
                }
            }
            let kept = match &unsent {
                Some(d) => {
                    stage
                        .put(&key, &serde_json::to_vec(d).unwrap_or_default())
                        .await
                }
                None if waiting.is_some() => stage.put(&key, b"null").await,
                None => Ok(()),
            };
            if let Err(e) = kept {
                tracing::warn!(channel, error = %e, "the digest's outbox could not be written");
            }
        }
    }

    async fn email(&self, digest: &Digest) -> Result<(), String> {
        let Some((email, password)) = &self.email else {
            return Ok(());
        };
        let mailbox = |a: &str| a.parse::<Mailbox>().map_err(|e| format!("{a}: {e}"));
        let mut message = Message::builder()
            .from(mailbox(&email.from)?)
            .subject(digest.headline());
        for to in &email.to {
            message = message.to(mailbox(to)?);
        }
        let message = message
            .multipart(MultiPart::alternative_plain_html(
                digest.text(true),
                digest.html(),
            ))
            .map_err(|e| e.to_string())?;
        let mut transport = match email.security {
            SmtpSecurity::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&email.host),
            SmtpSecurity::Starttls => {
                AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&email.host)
            }
            SmtpSecurity::Plain => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(
                &email.host,
            )),
        }
        .map_err(|e| e.to_string())?
        .port(email.port())
        .timeout(Some(Duration::from_secs(email.timeout_secs)));
        if let (Some(user), Some(password)) = (&email.username, password) {
            transport = transport.credentials(Credentials::new(
                user.clone(),
                password.expose().to_string(),
            ));
        }
        let shown = format!("smtp {}:{}", email.host, email.port());
        tokio::time::timeout(
            Duration::from_secs(email.timeout_secs),
            transport.build().send(message),
        )
        .await
        .map_err(|_| format!("{shown}: no answer in time"))?
        .map(|_| ())
        .map_err(|e| format!("{shown}: {e}"))
    }

    async fn webhook(&self, digest: &Digest) -> Result<(), String> {
        let Some((url, hook)) = &self.webhook else {
            return Ok(());
        };
        let body = serde_json::json!({
            "text": digest.text(false),
            "digest": digest,
        });
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(hook.timeout_secs))
            .build()
            .map_err(|e| e.to_string())?;
        // The URL carries the webhook's token: errors name the host only.
        let shown = url::Url::parse(url.expose().trim())
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_default();
        let answer = client
            .post(url.expose().trim())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| {
                format!(
                    "webhook at {shown} could not be reached: {}",
                    e.without_url()
                )
            })?;
        match answer.status() {
            s if s.is_success() => Ok(()),
            s => Err(format!("webhook at {shown} answered {s}")),
        }
    }
}

/// A check's message without the URL it quotes (a webhook's URL is a secret).
fn strip_url(why: &str) -> String {
    match why.find("' is") {
        Some(i) if why.starts_with('\'') => format!("the URL{}", &why[i + 1..]),
        _ => why.to_string(),
    }
}

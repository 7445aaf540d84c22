//! The `[alerts]` section: who is told, over which channel, and what counts as silence.

use crate::checks::{self, Invalid};
use crate::secret::SecretRef;
use serde::Deserialize;

/// Where the digest of what needs a person goes, and the thresholds of silence.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// A digest by email over SMTP.
    pub email: Option<EmailConfig>,
    /// A digest posted as JSON to a webhook (Teams and Slack incoming webhooks take it).
    pub webhook: Option<WebhookConfig>,
    /// A connector is silent on a complete day with no items when its last complete days
    /// averaged more items than this. 0: never. Default 10.
    #[serde(default = "default_silent_source_items")]
    pub silent_source_items: u64,
    /// A mapped employee is silent after this many complete days without a copy: a phone
    /// that stopped archiving. 0: never. Default 5.
    #[serde(default = "default_silent_user_days")]
    pub silent_user_days: u32,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            email: None,
            webhook: None,
            silent_source_items: default_silent_source_items(),
            silent_user_days: default_silent_user_days(),
        }
    }
}

fn default_silent_source_items() -> u64 {
    10
}

fn default_silent_user_days() -> u32 {
    5
}

/// An SMTP server and the digest's addresses.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    pub host: String,
    /// Default 587 (starttls), 465 (tls), 25 (plain).
    pub port: Option<u16>,
    /// "starttls" (default), "tls" (implicit TLS), or "plain" (loopback only, with
    /// allow_plaintext_loopback).
    #[serde(default)]
    pub security: SmtpSecurity,
    #[serde(default)]
    pub allow_plaintext_loopback: bool,
    /// Signs in when set, with `password`.
    pub username: Option<String>,
    pub password: Option<SecretRef>,
    pub from: String,
    pub to: Vec<String>,
    /// Seconds the whole send may take. Default 30.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SmtpSecurity {
    #[default]
    Starttls,
    Tls,
    Plain,
}

/// A webhook: its URL is a secret (Teams and Slack put the token in it).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: SecretRef,
    /// Allow a plain-http URL to a loopback address (tests).
    #[serde(default)]
    pub allow_http_loopback: bool,
    /// Seconds the post may take. Default 30.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

fn default_timeout() -> u64 {
    30
}

impl AlertsConfig {
    /// Checks the addresses and that plain SMTP stays on this machine.
    pub fn validate(&self) -> Result<(), Invalid> {
        if let Some(email) = &self.email {
            email.validate().map_err(|e| e.under("email"))?;
        }
        Ok(())
    }
}

impl EmailConfig {
    fn validate(&self) -> Result<(), Invalid> {
        let address = |key: &str, a: &str| match a.parse::<lettre::Address>() {
            Ok(_) => Ok(()),
            Err(e) => Err(Invalid::new(
                key,
                format!("'{a}' is not an email address: {e}"),
            )),
        };
        address("from", &self.from)?;
        if self.to.is_empty() {
            return Err(Invalid::new("to", "name at least one recipient"));
        }
        for to in &self.to {
            address("to", to)?;
        }
        if self.security == SmtpSecurity::Plain
            && !(checks::is_loopback_host(&self.host) && self.allow_plaintext_loopback)
        {
            return Err(Invalid::new(
                "security",
                format!(
                    "plain SMTP to {} would send the digest and any password unencrypted; use \
                     starttls or tls (plain is allowed only to a loopback address with \
                     allow_plaintext_loopback = true)",
                    self.host
                ),
            ));
        }
        if self.username.is_some() != self.password.is_some() {
            return Err(Invalid::new(
                "password",
                "username and password go together: set both to sign in, or neither",
            ));
        }
        Ok(())
    }

    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.security {
            SmtpSecurity::Starttls => 587,
            SmtpSecurity::Tls => 465,
            SmtpSecurity::Plain => 25,
        })
    }
}

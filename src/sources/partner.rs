//! The partners a connector can pull from. Each partner's module declares one
//! [`Descriptor`]: its name, folder, reserved domain, HTTPS feed, authentication, the
//! transports it allows, and how its source is built. [`REGISTRY`] lists them; nothing else
//! in the crate names a partner.

use super::config::{ConnectorConfig, HttpsConfig, SourceConfig};
use super::eml::{EmlFlavor, EmlFormat};
use super::{https, DropSource, IntakeSource, RecordFormat, Source, ZipDropSource};
use crate::secret::Secrets;
use std::fmt;

/// Every partner, by its module's descriptor. A new partner is one line here.
pub const REGISTRY: &[&Descriptor] = &[
    &super::telemessage::o2::PARTNER,
    &super::telemessage::whatsapp::PARTNER,
    &super::celltrust::PARTNER,
    &super::merge1::PARTNER,
];

/// What the rest of the crate knows of one partner.
#[derive(Debug)]
pub struct Descriptor {
    /// The name in the configuration and the status log, e.g. `telemessage-o2`.
    pub name: &'static str,
    /// The Inbox subfolder Microsoft's connector uses for this partner.
    pub default_folder: &'static str,
    /// The reserved domain for participants without an email address.
    pub invalid_domain: &'static str,
    /// The vendor's path segment in our HTTPS contracts (`docs/partners/`).
    pub vendor: &'static str,
    /// The feed of records under the API's base URL (empty: the partner finds its feeds).
    pub feed: &'static str,
    /// How its API is signed in to.
    pub auth: AuthKind,
    /// The transports a connector of this partner may use.
    pub transports: &'static [Transport],
    /// Whether the connector needs a `[connectors.<name>.celltrust]` table.
    pub celltrust_table: bool,
    /// How the partner's own email (EML files, SMTP) is read, when it sends any.
    pub email: Option<EmlFlavor>,
    /// The connector's source, its format behind its transport.
    pub build: fn(&Building<'_>) -> crate::Result<Box<dyn Source>>,
}

/// How a partner's API is signed in to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthKind {
    /// A username and password exchanged for a session token (`auth/login`).
    Session,
    /// Client credentials exchanged for a bearer token (`oauth/token`).
    ClientCredentials,
    /// A static key in the `X-Api-Key` header.
    ApiKey,
}

impl AuthKind {
    /// The `source` keys this authentication needs.
    pub fn credentials(self) -> &'static [&'static str] {
        match self {
            AuthKind::Session => &["username", "password"],
            AuthKind::ClientCredentials => &["client_id", "client_secret"],
            AuthKind::ApiKey => &["api_key"],
        }
    }
}

/// How records travel from a partner to us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// An export drop directory.
    Drop,
    /// TeleMessage's EML ZIP export.
    ZipDrop,
    /// Our HTTPS contract.
    Https,
    /// Email the partner sends to the SMTP intake.
    Smtp,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Drop => "drop",
            Transport::ZipDrop => "zip-drop",
            Transport::Https => "https",
            Transport::Smtp => "smtp",
        }
    }
}

/// A partner, as configured: one of [`REGISTRY`].
#[derive(Clone, Copy)]
pub struct Partner(&'static Descriptor);

impl Partner {
    /// The registered partner of this name.
    pub fn named(name: &str) -> Option<Partner> {
        REGISTRY.iter().find(|d| d.name == name).map(|d| Partner(d))
    }

    pub fn descriptor(self) -> &'static Descriptor {
        self.0
    }

    pub fn as_str(self) -> &'static str {
        self.0.name
    }

    /// The Inbox subfolder Microsoft's connector uses for this partner.
    pub fn default_folder(self) -> &'static str {
        self.0.default_folder
    }

    /// The reserved domain for participants without an email address.
    pub fn invalid_domain(self) -> &'static str {
        self.0.invalid_domain
    }
}

impl PartialEq for Partner {
    fn eq(&self, other: &Partner) -> bool {
        self.0.name == other.0.name
    }
}

impl Eq for Partner {}

impl fmt::Debug for Partner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.name)
    }
}

impl<'de> serde::Deserialize<'de> for Partner {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Partner, D::Error> {
        let name = String::deserialize(deserializer)?;
        Partner::named(&name).ok_or_else(|| {
            let known: Vec<&str> = REGISTRY.iter().map(|d| d.name).collect();
            serde::de::Error::custom(format!(
                "unknown partner '{name}'; partners are {}",
                known.join(", ")
            ))
        })
    }
}

/// What building a connector's source needs: the connector, its validated section, and
/// the settings it shares with the others.
pub struct Building<'a> {
    pub name: &'a str,
    pub connector: &'a ConnectorConfig,
    pub region: phonenumber::country::Id,
    pub max_item_bytes: u64,
    pub secrets: &'a Secrets,
    /// Where the SMTP intake keeps what it accepted.
    pub stage: std::sync::Arc<dyn crate::stage::Stage>,
}

impl Building<'_> {
    /// The source reading `format` through the connector's transport; `sl2` is CellTrust
    /// SL2's access check, which finds its own feeds over HTTPS.
    pub fn source<F: RecordFormat>(
        &self,
        format: F,
        sl2: Option<https::Sl2Access>,
    ) -> crate::Result<Box<dyn Source>> {
        let limit = self.max_item_bytes;
        Ok(match &self.connector.source {
            SourceConfig::Drop { path } => {
                Box::new(DropSource::new(path, format).with_max_item_bytes(limit))
            }
            SourceConfig::ZipDrop { path } => {
                Box::new(ZipDropSource::new(path, self.region).with_max_item_bytes(limit))
            }
            SourceConfig::Smtp { settle_hours, .. } => {
                let flavor = self.connector.partner.descriptor().email.ok_or_else(|| {
                    crate::Error::Usage(format!(
                        "connectors.{}: partner {} sends no email",
                        self.name,
                        self.connector.partner.as_str()
                    ))
                })?;
                let format = EmlFormat {
                    flavor,
                    region: self.region,
                };
                let settle = chrono::Duration::hours(i64::from(*settle_hours));
                Box::new(IntakeSource::new(
                    self.stage.clone(),
                    self.name,
                    format,
                    settle,
                    limit,
                ))
            }
            SourceConfig::Https(settings) => {
                let client = self.client(settings)?;
                let feed = self.connector.partner.descriptor().feed;
                Box::new(https::HttpsSource::new(client, feed, sl2, format))
            }
        })
    }

    fn client(&self, settings: &HttpsConfig) -> crate::Result<https::PartnerClient> {
        let name = self.name;
        let key = |k: &str| format!("connectors.{name}.source.{k}");
        let auth = match self.connector.partner.descriptor().auth {
            AuthKind::Session => https::Auth::Session {
                username: settings.username.clone().unwrap_or_default(),
                password: self
                    .secrets
                    .resolve(&key("password"), settings.password.as_ref())?,
            },
            AuthKind::ClientCredentials => https::Auth::ClientCredentials {
                client_id: settings.client_id.clone().unwrap_or_default(),
                secret: self
                    .secrets
                    .resolve(&key("client_secret"), settings.client_secret.as_ref())?,
            },
            AuthKind::ApiKey => https::Auth::ApiKey {
                key: self
                    .secrets
                    .resolve(&key("api_key"), settings.api_key.as_ref())?,
            },
        };
        let client_settings = https::HttpsSettings {
            page_size: settings.page_size,
            overlap: chrono::Duration::hours(i64::from(settings.overlap_hours)),
            timeout: std::time::Duration::from_secs(settings.timeout_secs),
            max_retries: settings.max_retries as usize,
            retry_initial: std::time::Duration::from_millis(settings.retry_initial_ms),
            max_page_bytes: settings.max_page_bytes,
            max_item_bytes: self.max_item_bytes,
        };
        https::PartnerClient::new(name, settings.url.clone(), auth, client_settings).map_err(
            |why| {
                self.secrets
                    .error(&format!("connectors.{name}.source"), why)
                    .into()
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_partner_is_registered_once_with_what_it_needs() {
        let mut names: Vec<&str> = REGISTRY.iter().map(|d| d.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), REGISTRY.len(), "a partner registered twice");
        for d in REGISTRY {
            assert!(d.invalid_domain.ends_with(".invalid"), "{}", d.name);
            assert!(!d.transports.is_empty(), "{}", d.name);
            let smtp = d.transports.contains(&Transport::Smtp);
            assert_eq!(
                smtp,
                d.email.is_some(),
                "{}: smtp needs an email flavor",
                d.name
            );
            assert!(crate::checks::folder_name(d.default_folder).is_ok());
            assert_eq!(Partner::named(d.name).map(Partner::as_str), Some(d.name));
        }
        assert!(Partner::named("telemessage").is_none());
    }
}

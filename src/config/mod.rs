//! The configuration: one TOML file, overridable from the environment
//! (`COMMS_ARCHIVER__SECTION__KEY`), validated before anything is built.
//!
//! This module keeps the file as a whole: loading, environment overrides, the locator that
//! names file, line and key, and the calls to each section's validation. Each section is
//! declared, defaulted and checked by the component it configures.
//!
//! Every error names the file, the line and the key, so an admin can fix it without guessing.

mod locate;

pub use locate::line_of_key;
use locate::*;

use crate::alerts::AlertsConfig;
use crate::checks::{self, Invalid};
use crate::mailbox::MailboxConfig;
use crate::mapping::MappingConfig;
use crate::pipeline::ArchiverConfig;
use crate::scheduler::ScheduleConfig;
use crate::secret::{Secrets, INLINE_SECRET};
use crate::sources::{ConnectorConfig, SourceConfig};
use crate::stage::StageConfig;
use crate::telemetry::TelemetryConfig;
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

/// The whole validated configuration: each component's section, typed.
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
    #[serde(default)]
    pub alerts: AlertsConfig,
    pub stage: StageConfig,
    pub mailbox: MailboxConfig,
    /// The SMTP intake partners deliver to, for connectors with `transport = "smtp"`.
    pub intake: Option<crate::intake::IntakeConfig>,
    pub connectors: BTreeMap<String, ConnectorConfig>,
    /// The file this configuration was read from (for error messages).
    #[serde(skip)]
    pub file: PathBuf,
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

    /// Each section's own checks, in the order of the file; the first problem is located
    /// in the file (or blamed on the environment variable that set it).
    fn validate(
        &self,
        path: &Path,
        text: &str,
        env: &[(String, String)],
    ) -> Result<(), ConfigError> {
        let located = |section: &str, invalid: Invalid| {
            let key = match invalid.key.as_str() {
                "" => section.to_string(),
                key => format!("{section}.{key}"),
            };
            // A value set from the environment is blamed on its variable, not the file.
            let var = format!("{ENV_PREFIX}__{}", key.replace('.', "__").to_uppercase());
            match env.iter().any(|(k, _)| *k == var) {
                true => ConfigError {
                    file: path.to_path_buf(),
                    line: None,
                    message: format!(
                        "{} (set by the environment variable {var})",
                        invalid.message
                    ),
                    key: Some(key),
                },
                false => ConfigError {
                    file: path.to_path_buf(),
                    line: line_of_key(text, &key),
                    key: Some(key),
                    message: invalid.message,
                },
            }
        };
        self.schedule
            .validate()
            .map_err(|e| located("schedule", e))?;
        self.telemetry
            .validate()
            .map_err(|e| located("telemetry", e))?;
        self.archiver
            .validate()
            .map_err(|e| located("archiver", e))?;
        self.mapping.validate().map_err(|e| located("mapping", e))?;
        self.alerts.validate().map_err(|e| located("alerts", e))?;
        self.mailbox.validate().map_err(|e| located("mailbox", e))?;
        self.stage.validate().map_err(|e| located("stage", e))?;
        if self.connectors.is_empty() {
            return Err(located(
                "connectors",
                Invalid::new(
                    "",
                    "no connector is configured; add a [connectors.<name>] table",
                ),
            ));
        }
        for (name, connector) in &self.connectors {
            let section = format!("connectors.{name}");
            if !checks::is_connector_name(name) {
                return Err(located(
                    &section,
                    Invalid::new(
                        "",
                        format!(
                            "connector name '{name}' must be lowercase letters, digits and '-', \
                             starting with a letter or digit"
                        ),
                    ),
                ));
            }
            connector.validate().map_err(|e| located(&section, e))?;
        }
        self.validate_intake()
            .map_err(|(section, e)| located(&section, e))
    }

    /// The intake and the connectors it routes to agree: an SMTP connector needs the
    /// `[intake]` table, and each recipient goes to one connector.
    fn validate_intake(&self) -> Result<(), (String, Invalid)> {
        if let Some(intake) = &self.intake {
            intake.validate().map_err(|e| ("intake".to_string(), e))?;
        }
        let mut seen: BTreeMap<String, &str> = BTreeMap::new();
        for (name, connector) in &self.connectors {
            let SourceConfig::Smtp { recipients, .. } = &connector.source else {
                continue;
            };
            let section = format!("connectors.{name}");
            if self.intake.is_none() {
                return Err((
                    section,
                    Invalid::new(
                        "source.transport",
                        "transport \"smtp\" needs an [intake] table with the listen address",
                    ),
                ));
            }
            for recipient in recipients {
                if let Some(other) = seen.insert(recipient.to_ascii_lowercase(), name) {
                    return Err((
                        section,
                        Invalid::new(
                            "source.recipients",
                            format!("{recipient} already goes to connector {other}"),
                        ),
                    ));
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

    /// The resolver of the secrets this configuration's sections reference.
    pub fn secrets(&self) -> Secrets {
        Secrets::new(&self.file)
    }

    /// Copies in flight at once: as configured, or what suits the mailbox backend.
    pub fn max_in_flight(&self) -> usize {
        self.archiver
            .max_in_flight
            .unwrap_or_else(|| self.mailbox.default_in_flight())
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

#[cfg(test)]
mod tests;

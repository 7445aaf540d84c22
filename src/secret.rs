//! Secrets: referenced in the configuration, never written in it, never shown.

use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};

/// Where a secret comes from: `{ env = "VAR" }` or `{ file = "/run/secrets/name" }`.
/// Secrets are never written in the configuration itself, so the file can be shared and
/// reviewed; the value is read when the component that needs it is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRef {
    pub env: Option<String>,
    pub file: Option<PathBuf>,
}

/// What a secret written as a value instead of a reference is told; the value is never
/// repeated, in this or any other error.
pub(crate) const INLINE_SECRET: &str =
    "a secret is never written in the configuration: reference it as \
     { env = \"VARIABLE\" } (an environment variable holding it) or \
     { file = \"/run/secrets/name\" } (a file holding it)";

/// The keys that hold secret references, wherever they appear.
pub(crate) const SECRET_KEYS: &[&str] = &[
    "password",
    "client_secret",
    "client_certificate",
    "sas",
    "api_key",
    "status_token",
];

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Reference {
            env: Option<String>,
            file: Option<PathBuf>,
        }

        /// Takes a table; anything else is refused without a word of what it was.
        struct Visitor;

        macro_rules! refuse {
            ($($name:ident: $ty:ty),*) => {$(
                fn $name<E: serde::de::Error>(self, _: $ty) -> Result<SecretRef, E> {
                    Err(E::custom(INLINE_SECRET))
                }
            )*};
        }

        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = SecretRef;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a secret reference, { env = \"VAR\" } or { file = \"PATH\" }")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<SecretRef, A::Error> {
                let r = Reference::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(SecretRef {
                    env: r.env,
                    file: r.file,
                })
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, _: A) -> Result<SecretRef, A::Error> {
                Err(serde::de::Error::custom(INLINE_SECRET))
            }

            refuse!(visit_str: &str, visit_bytes: &[u8], visit_bool: bool, visit_i64: i64,
                visit_u64: u64, visit_f64: f64, visit_char: char);
        }

        deserializer.deserialize_any(Visitor)
    }
}

impl SecretRef {
    /// Reads the secret. Errors name the variable or file, never the value.
    pub fn resolve(&self) -> Result<Secret, String> {
        let value = match (&self.env, &self.file) {
            (Some(var), None) => std::env::var(var)
                .map_err(|_| format!("environment variable {var} is not set (or not UTF-8)"))?,
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read secret file {}: {e}", path.display()))?
                .trim_end_matches(['\r', '\n'])
                .to_string(),
            _ => {
                return Err("a secret takes exactly one of env = \"VAR\" or file = \"PATH\"".into())
            }
        };
        if value.is_empty() {
            return Err("the secret is empty".into());
        }
        Ok(Secret(value))
    }
}

/// A secret value: its Debug never shows it, and it has no Display.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// A secret made in code (generated development credentials, tests).
    pub fn from_value(value: &str) -> Secret {
        Secret(value.to_string())
    }

    /// The value, for the one place that must send it (an authentication request).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Reads the secrets a section references, for the component being built. Its errors name
/// the configuration file and the key, never the value.
#[derive(Debug, Clone)]
pub struct Secrets {
    file: PathBuf,
}

/// A key whose value cannot be used as given, found while its component is built: the
/// secret it references is unreadable or missing, or the component refused it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}, key `{key}`: {message}", file.display())]
pub struct SettingError {
    pub file: PathBuf,
    pub key: String,
    pub message: String,
}

impl Secrets {
    /// The resolver for the sections of the configuration file `file`.
    pub fn new(file: &Path) -> Secrets {
        Secrets {
            file: file.to_path_buf(),
        }
    }

    /// The secret `key` references; a missing reference or an unreadable secret is an
    /// error naming the key.
    pub fn resolve(
        &self,
        key: &str,
        reference: Option<&SecretRef>,
    ) -> Result<Secret, SettingError> {
        reference
            .ok_or_else(|| self.error(key, "is required".into()))?
            .resolve()
            .map_err(|why| self.error(key, why))
    }

    /// An error about `key` of the file, found while building its component.
    pub fn error(&self, key: &str, message: String) -> SettingError {
        SettingError {
            file: self.file.clone(),
            key: key.to_string(),
            message,
        }
    }
}

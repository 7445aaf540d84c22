//! Small checks every section of the configuration shares: endpoints, folder names, mail
//! domains, connector names. A leaf: it knows no other module of the crate.

use url::Url;

/// What is wrong with one key of a section, the key relative to the section (`"endpoint"`,
/// `"source.url"`); the configuration locates it in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub key: String,
    pub message: String,
}

impl Invalid {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Invalid {
        Invalid {
            key: key.into(),
            message: message.into(),
        }
    }

    /// The same problem, its key under `prefix` (`"celltrust"` + `"domain"`).
    pub fn under(self, prefix: &str) -> Invalid {
        Invalid {
            key: format!("{prefix}.{}", self.key),
            ..self
        }
    }
}

/// Whether a host name or address is this machine.
pub fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Reads a URL from the file, refusing what is not one where it is written.
pub fn de_url<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Url, D::Error> {
    let raw = <String as serde::Deserialize>::deserialize(deserializer)?;
    Url::parse(&raw).map_err(|e| serde::de::Error::custom(format!("'{raw}' is not a URL: {e}")))
}

/// [`de_url`] for a key that may be left out.
pub fn de_optional_url<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Url>, D::Error> {
    de_url(deserializer).map(Some)
}

/// Checks an endpoint: https, or plain http to a loopback address when allowed explicitly.
pub fn endpoint(url: &Url, allow_http_loopback: bool) -> Result<(), String> {
    let raw = url.as_str();
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
pub fn folder_name(folder: &str) -> Result<(), String> {
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

/// A connector's name: lowercase letters, digits and '-', as it appears in stage keys.
pub fn is_connector_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A mail domain written in lowercase, e.g. `contoso.com`.
pub fn is_domain(domain: &str) -> bool {
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
    use super::*;

    #[test]
    fn endpoints_are_https_or_allowed_loopback_http() {
        let url = |s: &str| Url::parse(s).unwrap();
        assert!(endpoint(&url("https://a.example/x"), false).is_ok());
        assert!(endpoint(&url("http://127.0.0.1:1/x"), true).is_ok());
        assert!(endpoint(&url("http://127.0.0.1:1/x"), false)
            .unwrap_err()
            .contains("allow_http_loopback"));
        assert!(endpoint(&url("http://a.example/x"), true)
            .unwrap_err()
            .contains("must be https"));
        assert!(endpoint(&url("ftp://a.example"), true).is_err());
        assert!(is_loopback_host("[::1]") && is_loopback_host("localhost"));
        assert!(!is_loopback_host("imap.contoso.com"));
    }
}

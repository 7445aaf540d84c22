//! `[intake]`: the SMTP listener partners deliver to (TeleMessage's SMTP destination,
//! Merge1's email output). Which recipient goes to which connector is each connector's
//! `source.recipients`.

use crate::checks::Invalid;
use crate::secret::SecretRef;
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

/// The listener's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntakeConfig {
    /// Where to listen, e.g. `0.0.0.0:25`.
    pub listen: SocketAddr,
    /// The name the server greets with. Default: `comms-archiver`.
    #[serde(default = "default_hostname")]
    pub hostname: String,
    /// The largest message taken (SIZE); a larger one is refused with 552. Default 50 MiB.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: u64,
    /// Client networks allowed to connect, as CIDR blocks. Default: loopback only.
    #[serde(default = "default_allow")]
    pub allow: Vec<String>,
    /// Refuse MAIL before STARTTLS.
    #[serde(default)]
    pub require_tls: bool,
    /// What the messages being received may hold in memory together; a message that would
    /// go past it is told 451 (try again). Default 256 MiB, and at least max_message_bytes.
    #[serde(default = "default_max_buffered_bytes")]
    pub max_buffered_bytes: u64,
    /// Connections served at once; more are told 421 and closed. Default 200.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Seconds a client may stay silent before it is disconnected. Default 300
    /// (RFC 5321 4.5.3.2 asks for at least 5 minutes).
    #[serde(default = "default_idle_timeout_secs")]
    pub idle_timeout_secs: u64,
    pub tls: Option<TlsConfig>,
    pub auth: Option<AuthConfig>,
}

/// STARTTLS: the server's certificate and key, and the CA that client certificates must be
/// signed by when TeleMessage's "TLS with certificates" level is used.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub certificate: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

/// AUTH PLAIN / LOGIN, offered only once the connection is encrypted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub username: String,
    pub password: SecretRef,
}

fn default_hostname() -> String {
    "comms-archiver".into()
}

fn default_max_message_bytes() -> u64 {
    50 * 1024 * 1024
}

fn default_max_buffered_bytes() -> u64 {
    256 * 1024 * 1024
}

fn default_allow() -> Vec<String> {
    vec!["127.0.0.0/8".into(), "::1/128".into()]
}

fn default_max_connections() -> usize {
    200
}

fn default_idle_timeout_secs() -> u64 {
    300
}

/// A block of client addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    address: IpAddr,
    prefix: u8,
}

impl Network {
    /// Reads `203.0.113.0/24`, `2001:db8::/32` or a single address.
    pub fn parse(text: &str) -> Result<Network, String> {
        let (address, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let address: IpAddr = address
            .trim()
            .parse()
            .map_err(|_| format!("'{text}' is not an address or CIDR block"))?;
        let most = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => most,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= most)
                .ok_or_else(|| format!("'{text}': the prefix must be 0 to {most}"))?,
        };
        Ok(Network { address, prefix })
    }

    pub fn contains(&self, peer: IpAddr) -> bool {
        let peer = match peer {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer, IpAddr::V4),
            v4 => v4,
        };
        let prefix = u32::from(self.prefix);
        match (peer, self.address) {
            (IpAddr::V4(peer), IpAddr::V4(block)) => {
                let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
                u32::from(peer) & mask == u32::from(block) & mask
            }
            (IpAddr::V6(peer), IpAddr::V6(block)) => {
                let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
                u128::from(peer) & mask == u128::from(block) & mask
            }
            _ => false,
        }
    }
}

impl IntakeConfig {
    /// The allowed networks, read.
    pub fn networks(&self) -> Vec<Network> {
        self.allow
            .iter()
            .filter_map(|n| Network::parse(n).ok())
            .collect()
    }

    pub fn validate(&self) -> Result<(), Invalid> {
        if self.allow.is_empty() {
            return Err(Invalid::new(
                "allow",
                "no client may connect; list the partner's sending networks (CIDR blocks)",
            ));
        }
        for network in &self.allow {
            Network::parse(network).map_err(|why| Invalid::new("allow", why))?;
        }
        if self.hostname.is_empty() || !self.hostname.chars().all(|c| c.is_ascii_graphic()) {
            return Err(Invalid::new("hostname", "must be a host name"));
        }
        if self.max_message_bytes < 1024 {
            return Err(Invalid::new("max_message_bytes", "must be at least 1024"));
        }
        if self.max_buffered_bytes < self.max_message_bytes {
            return Err(Invalid::new(
                "max_buffered_bytes",
                format!(
                    "must be at least max_message_bytes ({}), or no message that large could be received",
                    self.max_message_bytes
                ),
            ));
        }
        if self.max_connections == 0 {
            return Err(Invalid::new("max_connections", "must be at least 1"));
        }
        if self.idle_timeout_secs == 0 {
            return Err(Invalid::new("idle_timeout_secs", "must be at least 1"));
        }
        if self.require_tls && self.tls.is_none() {
            return Err(Invalid::new(
                "require_tls",
                "needs [intake.tls] with a certificate and key",
            ));
        }
        if self.auth.is_some() && self.tls.is_none() {
            return Err(Invalid::new(
                "auth",
                "AUTH is only offered after STARTTLS: add [intake.tls] with a certificate and key",
            ));
        }
        if let Some(auth) = &self.auth {
            if auth.username.is_empty() {
                return Err(Invalid::new("auth.username", "must not be empty"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_hold_exactly_their_addresses() {
        let block = Network::parse("203.0.113.0/24").unwrap();
        assert!(block.contains("203.0.113.77".parse().unwrap()));
        assert!(!block.contains("203.0.114.1".parse().unwrap()));
        assert!(block.contains("::ffff:203.0.113.5".parse().unwrap()));
        assert!(!block.contains("2001:db8::1".parse().unwrap()));
        let one = Network::parse("127.0.0.1").unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        let v6 = Network::parse("2001:db8::/32").unwrap();
        assert!(v6.contains("2001:db8:1::5".parse().unwrap()));
        assert!(!v6.contains("2001:db9::5".parse().unwrap()));
        assert!(Network::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        assert!(Network::parse("10.0.0.0/33").is_err());
        assert!(Network::parse("ten").is_err());
    }
}

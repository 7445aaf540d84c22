//! CellTrust SL2's access check: which environment, domain and units the account may read,
//! and the feeds that follow from them.

use super::PartnerClient;
use crate::sources::celltrust::Sl2Scope;
use crate::sources::SourceError;
use serde::Deserialize;

/// CellTrust SL2 access: which environment and units the account must be able to read.
#[derive(Debug, Clone)]
pub struct Sl2Access {
    /// "azure-global" or "azure-government".
    pub environment: String,
    pub scope: Sl2Scope,
}

#[derive(Debug, Deserialize)]
struct Sl2Session {
    role: String,
    domain: String,
    #[serde(default)]
    organizational_unit: Option<String>,
    environment: String,
}

impl Sl2Access {
    /// Checks the account may read every enabled unit; returns the feeds to pull.
    pub(super) async fn feeds(&self, client: &PartnerClient) -> Result<Vec<String>, SourceError> {
        let bytes = client.get("session", &[]).await?;
        let session: Sl2Session = serde_json::from_slice(&bytes).map_err(|e| {
            SourceError::Unavailable(format!(
                "connector {}: unreadable SL2 session: {e}",
                client.connector
            ))
        })?;
        let denied =
            |why: String| SourceError::Denied(format!("connector {}: {why}", client.connector));
        if !session.environment.eq_ignore_ascii_case(&self.environment) {
            return Err(denied(format!(
                "the SL2 account is in {}, the connector is configured for {}",
                session.environment, self.environment
            )));
        }
        if !session.domain.eq_ignore_ascii_case(&self.scope.domain) {
            return Err(denied(format!(
                "the SL2 account belongs to domain '{}', the connector is configured for '{}'",
                session.domain, self.scope.domain
            )));
        }
        let domain = &self.scope.domain;
        let mut feeds = Vec::new();
        if self.scope.enable_domain {
            feeds.push((None, format!("domains/{}/items", segment(domain))));
        }
        for unit in &self.scope.units {
            feeds.push((
                Some(unit.as_str()),
                format!("domains/{}/units/{}/items", segment(domain), segment(unit)),
            ));
        }
        if session.role.eq_ignore_ascii_case("ou_admin") {
            let own = session.organizational_unit.unwrap_or_default();
            for (unit, _) in &feeds {
                let allowed = unit.is_some_and(|u| u.eq_ignore_ascii_case(&own));
                if !allowed {
                    let asked = unit.map_or(format!("the domain '{domain}' itself"), |u| {
                        format!("OU '{u}'")
                    });
                    return Err(denied(format!(
                        "the SL2 account is an OU admin of '{own}' and cannot read {asked}; \
                         enable only '{own}' on this connector, or sign in as a domain admin"
                    )));
                }
            }
        } else if !session.role.eq_ignore_ascii_case("domain_admin") {
            return Err(denied(format!(
                "SL2 role '{}' is neither domain_admin nor ou_admin",
                session.role
            )));
        }
        Ok(feeds.into_iter().map(|(_, f)| f).collect())
    }
}

fn segment(raw: &str) -> String {
    raw.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

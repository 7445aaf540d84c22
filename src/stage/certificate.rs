//! Certificate authentication of a service principal: the client assertion (a JWT signed
//! RS256 with the certificate's private key, naming the certificate by its SHA-1 thumbprint
//! in `x5t`) that Entra ID accepts in place of a client secret. Signed with `ring`, so no
//! OpenSSL is needed at build or run time.

use azure_core::http::ClientMethodOptions;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// Signs client assertions for one service principal.
pub struct CertificateAssertion {
    key: RsaKeyPair,
    x5t: String,
    client_id: String,
    audience: String,
    issued: AtomicU64,
}

impl fmt::Debug for CertificateAssertion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAssertion")
            .field("client_id", &self.client_id)
            .field("x5t", &self.x5t)
            .finish_non_exhaustive()
    }
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The DER bodies of the PEM blocks labelled `label`.
fn pem_blocks(pem: &str, label: &str) -> Vec<Vec<u8>> {
    let (begin, end) = (
        format!("-----BEGIN {label}-----"),
        format!("-----END {label}-----"),
    );
    let mut out = Vec::new();
    let mut rest = pem;
    while let Some(start) = rest.find(&begin) {
        let after = &rest[start + begin.len()..];
        let Some(stop) = after.find(&end) else { break };
        let body: String = after[..stop]
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        if let Ok(der) = base64::engine::general_purpose::STANDARD.decode(body) {
            out.push(der);
        }
        rest = &after[stop + end.len()..];
    }
    out
}

impl CertificateAssertion {
    /// From a PEM holding the certificate and its private key (PKCS#8 or PKCS#1 RSA);
    /// `token_endpoint` is the tenant's `.../oauth2/v2.0/token`, the assertion's audience.
    pub fn from_pem(pem: &str, client_id: &str, token_endpoint: &str) -> Result<Self, String> {
        let certificate = pem_blocks(pem, "CERTIFICATE")
            .into_iter()
            .next()
            .ok_or("the PEM holds no CERTIFICATE block")?;
        let key = match pem_blocks(pem, "PRIVATE KEY").into_iter().next() {
            Some(der) => RsaKeyPair::from_pkcs8(&der)
                .map_err(|e| format!("the private key is not a usable RSA key: {e}"))?,
            None => {
                let der = pem_blocks(pem, "RSA PRIVATE KEY")
                    .into_iter()
                    .next()
                    .ok_or("the PEM holds no PRIVATE KEY block")?;
                RsaKeyPair::from_der(&der)
                    .map_err(|e| format!("the private key is not a usable RSA key: {e}"))?
            }
        };
        let thumbprint =
            ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &certificate);
        Ok(CertificateAssertion {
            key,
            x5t: b64url(thumbprint.as_ref()),
            client_id: client_id.to_string(),
            audience: token_endpoint.to_string(),
            issued: AtomicU64::new(0),
        })
    }

    /// A fresh assertion, valid for ten minutes.
    pub fn sign(&self) -> Result<String, String> {
        let now = chrono::Utc::now().timestamp();
        let n = self.issued.fetch_add(1, Ordering::Relaxed);
        let header = serde_json::json!({ "alg": "RS256", "typ": "JWT", "x5t": self.x5t });
        let claims = serde_json::json!({
            "aud": self.audience,
            "iss": self.client_id,
            "sub": self.client_id,
            "jti": crate::item::short_hash(&[&self.client_id, &now.to_string(), &n.to_string()]),
            "nbf": now,
            "iat": now,
            "exp": now + 600,
        });
        let signing_input = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let mut signature = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                signing_input.as_bytes(),
                &mut signature,
            )
            .map_err(|_| "signing the client assertion failed".to_string())?;
        Ok(format!("{signing_input}.{}", b64url(&signature)))
    }

    /// The public key, to verify assertions.
    pub fn public_key(&self) -> &[u8] {
        self.key.public().as_ref()
    }
}

#[async_trait::async_trait]
impl azure_identity::ClientAssertion for CertificateAssertion {
    async fn secret(&self, _: Option<ClientMethodOptions<'_>>) -> azure_core::Result<String> {
        self.sign().map_err(|m| {
            azure_core::Error::with_message(azure_core::error::ErrorKind::Credential, m)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEM: &str = include_str!("../../fixtures/certificates/service-principal.pem");
    const X5T: &str = include_str!("../../fixtures/certificates/x5t.txt");

    #[test]
    fn assertions_are_signed_jwts_naming_the_certificate() {
        let endpoint = "https://login.microsoftonline.us/tenant/oauth2/v2.0/token";
        let assertion = CertificateAssertion::from_pem(PEM, "app-id", endpoint).unwrap();
        let jwt = assertion.sign().unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let decode = |p: &str| -> serde_json::Value {
            serde_json::from_slice(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(p)
                    .unwrap(),
            )
            .unwrap()
        };
        let (header, claims) = (decode(parts[0]), decode(parts[1]));
        // The thumbprint openssl printed when the certificate was made.
        assert_eq!(header["x5t"], X5T.trim());
        assert_eq!(header["alg"], "RS256");
        assert_eq!(claims["aud"], endpoint);
        assert_eq!(claims["iss"], "app-id");
        assert_eq!(
            claims["exp"].as_i64().unwrap() - claims["nbf"].as_i64().unwrap(),
            600
        );
        let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[2])
            .unwrap();
        let public = ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            assertion.public_key(),
        );
        public
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
            .expect("the signature verifies with the certificate's key");
        assert_ne!(assertion.sign().unwrap(), jwt, "each assertion is fresh");
    }

    #[test]
    fn a_pem_without_a_key_is_refused() {
        let only_cert = &PEM[..PEM.find("-----BEGIN PRIVATE KEY-----").unwrap()];
        let e = CertificateAssertion::from_pem(only_cert, "a", "https://x").unwrap_err();
        assert!(e.contains("no PRIVATE KEY"), "{e}");
    }
}

//! Azurite, Microsoft's storage emulator: its public development account and an account
//! SAS signed with its key, for the Azurite demo, the tests and the benchmarks. Never for a
//! real account: the key is published by Microsoft.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Azurite's well-known development account (public, documented by Microsoft).
pub const DEV_ACCOUNT: &str = "devstoreaccount1";
/// Azurite's well-known development account key.
pub const DEV_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// An account SAS for the blob service (containers and blobs: read, write, delete, list,
/// add, create) signed with an account key: for Azurite's development account in tests and
/// demos. It may create the container, which a container SAS may not.
pub fn account_sas(
    account: &str,
    key_base64: &str,
    expiry: chrono::DateTime<chrono::Utc>,
) -> String {
    use base64::Engine;
    let engine = base64::engine::general_purpose::STANDARD;
    let (version, permissions, services, resource_types) = ("2020-12-06", "rwdlac", "b", "sco");
    let expiry = expiry.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    // Account SAS, version 2020-12-06: account, permissions, services, resource types,
    // start, expiry, IP, protocol, version, encryption scope, and a final empty line.
    let string_to_sign = [
        account,
        permissions,
        services,
        resource_types,
        "",
        &expiry,
        "",
        "",
        version,
        "",
        "",
    ]
    .join("\n");
    let key = engine.decode(key_base64).expect("a base64 account key");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key length");
    mac.update(string_to_sign.as_bytes());
    let signature = engine.encode(mac.finalize().into_bytes());
    let encoded: String = url::form_urlencoded::byte_serialize(signature.as_bytes()).collect();
    format!("sv={version}&ss={services}&srt={resource_types}&sp={permissions}&se={expiry}&sig={encoded}")
}

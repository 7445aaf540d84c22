//! The stage: a create-only object store between collecting and importing.
//!
//! Rendered messages, the ledger, checkpoints and status logs all live here, under keys like
//! `staged/<connector>/<day>/<mailbox>/<item-key>.eml`, so the host running the daemon can be
//! replaced without losing state.

pub mod azure;
mod cache;
pub mod certificate;
mod clock;
mod config;
mod local;
mod split;

pub use azure::AzureStage;
pub use cache::CachedStage;
pub use config::{AzureAuthKind, AzureCloud, AzureStageConfig, StageConfig};
pub use local::LocalStage;
pub use split::{is_evidence, SplitStage};

use crate::secret::Secrets;
use async_trait::async_trait;

/// What a create-only write found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// The object did not exist and now holds the bytes given.
    New,
    /// The object already existed; it was left as it was.
    AlreadyExists,
}

/// The version of an object (an ETag), for conditional writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version(pub String);

/// A stage operation failed; the work it belonged to stays open and is retried.
#[derive(Debug, thiserror::Error)]
#[error("stage {stage}: {operation} '{key}': {message}")]
pub struct StageError {
    /// The stage, described without secrets.
    pub stage: String,
    pub operation: &'static str,
    pub key: String,
    pub message: String,
}

/// An object store with create-only writes.
#[async_trait]
pub trait Stage: Send + Sync {
    /// Writes `bytes` under `key` unless the key exists already; never overwrites.
    async fn put_new(&self, key: &str, bytes: &[u8]) -> Result<Created, StageError>;
    /// [`Stage::put_new`] of bytes the caller shares: a store that sends them over the
    /// network sends them as they are, without a copy of its own.
    async fn put_new_shared(&self, key: &str, bytes: bytes::Bytes) -> Result<Created, StageError> {
        self.put_new(key, &bytes).await
    }
    /// Writes `bytes` under `key`, atomically replacing what was there.
    async fn put(&self, key: &str, bytes: &[u8]) -> Result<(), StageError>;
    /// The bytes under `key`, or None when there is no such object.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StageError>;
    /// How many bytes are under `key`, or None when there is no such object. Stores answer
    /// without reading the object; this default reads it.
    async fn size(&self, key: &str) -> Result<Option<u64>, StageError> {
        Ok(self.get(key).await?.map(|bytes| bytes.len() as u64))
    }
    /// The bytes under `key` and their version, or None when there is no such object.
    async fn get_versioned(&self, key: &str) -> Result<Option<(Vec<u8>, Version)>, StageError>;
    /// Writes `bytes` only if the object is still at `expected` (None: only if it does not
    /// exist). Returns the new version, or None when another writer changed it first.
    async fn put_if(
        &self,
        key: &str,
        bytes: &[u8],
        expected: Option<&Version>,
    ) -> Result<Option<Version>, StageError>;
    /// Every key under `prefix` (a folder path ending in '/'), in no particular order.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StageError>;
    /// Where the stage is, for logs (never with credentials).
    fn describe(&self) -> String;
    /// Makes the stage ready before a run (creates a missing container).
    async fn prepare(&self) -> Result<(), StageError> {
        Ok(())
    }
    /// Proves the stage takes writes: writes an object and removes it again, leaving nothing
    /// behind (`check`). What was proven, in words.
    async fn probe(&self) -> Result<String, StageError> {
        Ok(format!("{}: not probed", self.describe()))
    }
}

/// Proves a directory takes writes, leaving nothing behind: a file written and removed in
/// it, or, when it does not exist yet, in the nearest directory above it that does (where
/// the first run will create it). What was proven, in words.
pub fn probe_directory(dir: &std::path::Path) -> std::io::Result<String> {
    let existing = dir
        .ancestors()
        .find(|a| a.as_os_str().is_empty() || a.is_dir())
        .map(|a| {
            if a.as_os_str().is_empty() {
                std::path::Path::new(".")
            } else {
                a
            }
        })
        .unwrap_or(dir);
    let probe = existing.join(format!(".{}", probe_name()));
    std::fs::write(&probe, b"probe")?;
    std::fs::remove_file(&probe)?;
    Ok(match existing == dir {
        true => "takes writes".to_string(),
        false => format!(
            "does not exist yet; it is created under {}, which takes writes",
            existing.display()
        ),
    })
}

/// The name of a probe object: unique to this process and moment.
pub fn probe_name() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("comms-archiver-probe-{}-{nanos}", std::process::id())
}

/// Builds the stage its section names. Secrets are read here; a missing one is an error
/// naming its key.
pub fn build(config: &StageConfig, secrets: &Secrets) -> crate::Result<std::sync::Arc<dyn Stage>> {
    let azure = match config {
        StageConfig::Local { path, state_path } => {
            let evidence = std::sync::Arc::new(LocalStage::new(path));
            return Ok(match state_path {
                Some(state) => std::sync::Arc::new(SplitStage::new(
                    evidence,
                    std::sync::Arc::new(LocalStage::new(state)),
                )),
                None => evidence,
            });
        }
        StageConfig::Azure(azure) => azure,
    };
    let secret = |key: &str, reference: &Option<crate::secret::SecretRef>| {
        secrets.resolve(&format!("stage.{key}"), reference.as_ref())
    };
    let cloud = match azure.cloud {
        AzureCloud::AzureGlobal => azure_core::cloud::CloudConfiguration::AzurePublic,
        AzureCloud::AzureGovernment => azure_core::cloud::CloudConfiguration::AzureGovernment,
    };
    let client_options = azure_core::http::ClientOptions {
        cloud: Some(std::sync::Arc::new(cloud)),
        ..Default::default()
    };
    let identity_error = |e: azure_core::Error| {
        secrets.error("stage.auth", format!("cannot set up the identity: {e}"))
    };
    let auth = match azure.auth {
        AzureAuthKind::Sas => azure::AzureAuth::Sas(secret("sas", &azure.sas)?),
        AzureAuthKind::ClientSecret => {
            let value = secret("client_secret", &azure.client_secret)?;
            let credential = azure_identity::ClientSecretCredential::new(
                azure.tenant_id.as_deref().unwrap_or_default(),
                azure.client_id.clone().unwrap_or_default(),
                azure_core::credentials::Secret::new(value.expose().to_string()),
                Some(azure_identity::ClientSecretCredentialOptions { client_options }),
            )
            .map_err(identity_error)?;
            azure::AzureAuth::Token(credential)
        }
        AzureAuthKind::ClientCertificate => {
            let pem = secret("client_certificate", &azure.client_certificate)?;
            let tenant = azure.tenant_id.clone().unwrap_or_default();
            let client_id = azure.client_id.clone().unwrap_or_default();
            let login = azure.cloud.login_host();
            let endpoint = format!("{login}/{tenant}/oauth2/v2.0/token");
            let assertion =
                certificate::CertificateAssertion::from_pem(pem.expose(), &client_id, &endpoint)
                    .map_err(|why| secrets.error("stage.client_certificate", why))?;
            let credential = azure_identity::ClientAssertionCredential::new(
                tenant,
                client_id,
                assertion,
                Some(azure_identity::ClientAssertionCredentialOptions { client_options }),
            )
            .map_err(identity_error)?;
            azure::AzureAuth::Token(credential)
        }
        AzureAuthKind::ManagedIdentity => {
            let credential = azure_identity::ManagedIdentityCredential::new(Some(
                azure_identity::ManagedIdentityCredentialOptions {
                    user_assigned_id: azure
                        .client_id
                        .clone()
                        .map(azure_identity::UserAssignedId::ClientId),
                    client_options,
                },
            ))
            .map_err(identity_error)?;
            azure::AzureAuth::Token(credential)
        }
        AzureAuthKind::WorkloadIdentity => {
            let credential = azure_identity::WorkloadIdentityCredential::new(Some(
                azure_identity::WorkloadIdentityCredentialOptions {
                    credential_options: azure_identity::ClientAssertionCredentialOptions {
                        client_options,
                    },
                    client_id: azure.client_id.clone(),
                    tenant_id: azure.tenant_id.clone(),
                    ..Default::default()
                },
            ))
            .map_err(identity_error)?;
            azure::AzureAuth::Token(credential)
        }
    };
    let container = |name: &str, auth: azure::AzureAuth| {
        AzureStage::new(
            &azure.blob_endpoint(),
            name,
            auth,
            azure.max_retries,
            std::time::Duration::from_secs(azure.timeout_secs),
        )
        .map_err(|why| secrets.error("stage", why))
    };
    let stage: std::sync::Arc<dyn Stage> = match &azure.state_container {
        None => std::sync::Arc::new(container(&azure.container, auth)?),
        Some(state) => split_containers(&container, &azure.container, state, auth, secrets)?,
    };
    Ok(match &azure.cache_path {
        Some(path) => std::sync::Arc::new(CachedStage::new(stage, path, azure.cache_max_bytes)),
        None => stage,
    })
}

/// The evidence in one container, state in another, both under `auth`.
fn split_containers(
    container: &dyn Fn(&str, azure::AzureAuth) -> Result<AzureStage, crate::secret::SettingError>,
    evidence: &str,
    state: &str,
    auth: azure::AzureAuth,
    secrets: &Secrets,
) -> crate::Result<std::sync::Arc<dyn Stage>> {
    if let azure::AzureAuth::Sas(sas) = &auth {
        if sas.expose().trim().starts_with("http") {
            return Err(secrets
                .error(
                    "stage.sas",
                    "with state_container the SAS must be a token for the account (both \
                     containers), not one container's SAS URL"
                        .into(),
                )
                .into());
        }
    }
    Ok(std::sync::Arc::new(SplitStage::new(
        std::sync::Arc::new(container(evidence, auth.clone())?),
        std::sync::Arc::new(container(state, auth)?),
    )))
}

/// Checks a key is a relative path of safe segments (what every backend can store).
pub fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.starts_with('/') || key.ends_with('/') {
        return Err("a key is a relative path".to_string());
    }
    for segment in key.split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return Err(format!("segment '{segment}' is not allowed"));
        }
        if let Some(c) = segment
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "@+-_.=".contains(*c)))
        {
            return Err(format!("character {c:?} is not allowed"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_key;

    #[test]
    fn every_azure_authentication_builds_from_configuration() {
        crate::install_crypto_provider();
        let pem = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/certificates/service-principal.pem"
        );
        std::env::set_var("COMMS_ARCHIVER_TEST_STAGE_SECRET", "not-a-real-secret");
        let auths = [
            "auth = \"managed-identity\"".to_string(),
            "auth = \"client-secret\"\ntenant_id = \"00000000-0000-0000-0000-000000000001\"\nclient_id = \"app\"\nclient_secret = { env = \"COMMS_ARCHIVER_TEST_STAGE_SECRET\" }".to_string(),
            format!("auth = \"client-certificate\"\ntenant_id = \"00000000-0000-0000-0000-000000000001\"\nclient_id = \"app\"\nclient_certificate = {{ file = \"{pem}\" }}"),
            "auth = \"sas\"\nsas = { env = \"COMMS_ARCHIVER_TEST_STAGE_SECRET\" }".to_string(),
        ];
        for auth in auths {
            let text = format!(
                "[stage]\nkind = \"azure\"\naccount = \"contosoarchive\"\ncontainer = \"comms-archiver\"\ncloud = \"azure-government\"\n{auth}\n\
                 [mailbox]\nkind = \"maildir\"\npath = \"m\"\n\
                 [connectors.o2]\npartner = \"telemessage-o2\"\n[connectors.o2.source]\ntransport = \"drop\"\npath = \"d\"\n"
            );
            let config =
                crate::config::Config::from_toml(std::path::Path::new("t.toml"), &text, &[])
                    .unwrap();
            let stage = super::build(&config.stage, &config.secrets())
                .unwrap_or_else(|e| panic!("{auth}: {e}"));
            assert_eq!(
                stage.describe(),
                "Azure storage contosoarchive.blob.core.usgovcloudapi.net container comms-archiver"
            );
        }
    }

    #[test]
    fn keys_stay_inside_the_stage() {
        assert!(check_key("staged/o2/2026-11-20/alice@contoso.com/ab12.eml").is_ok());
        assert!(check_key("../etc/passwd").is_err());
        assert!(check_key("/abs").is_err());
        assert!(check_key("a//b").is_err());
        assert!(check_key("a/b c").is_err());
        assert!(check_key("a/./b").is_err());
    }
}

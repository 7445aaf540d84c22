//! The stage: a create-only object store between collecting and importing.
//!
//! Rendered messages, the ledger, checkpoints and status logs all live here, under keys like
//! `staged/<connector>/<day>/<mailbox>/<item-key>.eml`, so the host running the daemon can be
//! replaced without losing state.

mod local;

pub use local::LocalStage;

use async_trait::async_trait;

/// What a create-only write found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// The object did not exist and now holds the bytes given.
    New,
    /// The object already existed; it was left as it was.
    AlreadyExists,
}

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
    /// Writes `bytes` under `key`, atomically replacing what was there.
    async fn put(&self, key: &str, bytes: &[u8]) -> Result<(), StageError>;
    /// The bytes under `key`, or None when there is no such object.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StageError>;
    /// Whether `key` exists.
    async fn exists(&self, key: &str) -> Result<bool, StageError>;
    /// Where the stage is, for logs (never with credentials).
    fn describe(&self) -> String;
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
    fn keys_stay_inside_the_stage() {
        assert!(check_key("staged/o2/2026-11-20/alice@contoso.com/ab12.eml").is_ok());
        assert!(check_key("../etc/passwd").is_err());
        assert!(check_key("/abs").is_err());
        assert!(check_key("a//b").is_err());
        assert!(check_key("a/b c").is_err());
        assert!(check_key("a/./b").is_err());
    }
}

//! Evidence and state in two places. Evidence (staged messages, import records, run logs)
//! is written once and never rewritten or deleted, so it may sit under an immutability
//! (WORM) policy; state (day states, leases, checkpoints, the reconciliation's copy)
//! changes, and lives in a second container or directory beside it.

use super::{Created, Stage, StageError, Version};
use async_trait::async_trait;
use std::sync::Arc;

/// Whether a stage key (or a listing prefix) holds evidence: a staged message
/// (`staged/`), a journal batch of import records (`ledger/<connector>/journal/`), a run
/// log (`runs/`), a held copy (`held/`), or what the SMTP intake accepted (`intake/`).
/// Everything else is state.
pub fn is_evidence(key: &str) -> bool {
    if ["staged/", "runs/", "held/", "intake/"]
        .iter()
        .any(|p| key.starts_with(p))
    {
        return true;
    }
    let mut parts = key.split('/');
    matches!(
        (parts.next(), parts.next(), parts.next()),
        (Some("ledger"), Some(_), Some("journal"))
    )
}

/// The one object a probe of the evidence side ever writes.
pub const EVIDENCE_PROBE: &str = "probe/written-once";

/// A stage whose evidence and state are kept by two backends.
pub struct SplitStage {
    evidence: Arc<dyn Stage>,
    state: Arc<dyn Stage>,
}

impl SplitStage {
    pub fn new(evidence: Arc<dyn Stage>, state: Arc<dyn Stage>) -> SplitStage {
        SplitStage { evidence, state }
    }

    fn of(&self, key: &str) -> &dyn Stage {
        match is_evidence(key) {
            true => self.evidence.as_ref(),
            false => self.state.as_ref(),
        }
    }
}

#[async_trait]
impl Stage for SplitStage {
    /// The evidence may sit under an immutability policy that refuses deletes: its probe
    /// is one create-only write of a fixed key, made the first time and refused as existing
    /// ever after (which still proves the right to write).
    async fn probe(&self) -> Result<String, StageError> {
        self.evidence.put_new(EVIDENCE_PROBE, b"probe").await?;
        let state = self.state.probe().await?;
        Ok(format!(
            "evidence: {} takes create-only writes; state: {state}",
            self.evidence.describe()
        ))
    }

    async fn put_new(&self, key: &str, bytes: &[u8]) -> Result<Created, StageError> {
        self.of(key).put_new(key, bytes).await
    }

    async fn put_new_shared(&self, key: &str, bytes: bytes::Bytes) -> Result<Created, StageError> {
        self.of(key).put_new_shared(key, bytes).await
    }

    async fn put(&self, key: &str, bytes: &[u8]) -> Result<(), StageError> {
        self.of(key).put(key, bytes).await
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StageError> {
        self.of(key).get(key).await
    }

    async fn size(&self, key: &str) -> Result<Option<u64>, StageError> {
        self.of(key).size(key).await
    }

    async fn get_versioned(&self, key: &str) -> Result<Option<(Vec<u8>, Version)>, StageError> {
        self.of(key).get_versioned(key).await
    }

    async fn put_if(
        &self,
        key: &str,
        bytes: &[u8],
        expected: Option<&Version>,
    ) -> Result<Option<Version>, StageError> {
        self.of(key).put_if(key, bytes, expected).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StageError> {
        self.of(prefix).list(prefix).await
    }

    fn describe(&self) -> String {
        format!(
            "{} (evidence), {} (state)",
            self.evidence.describe(),
            self.state.describe()
        )
    }

    async fn prepare(&self) -> Result<(), StageError> {
        self.evidence.prepare().await?;
        self.state.prepare().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stage::LocalStage;

    #[test]
    fn evidence_is_what_is_written_once() {
        for key in [
            "staged/o2/2026-11-20/alice@contoso.com/ab.eml",
            "ledger/o2/journal/2026-11-20/w-000000.jsonl",
            "ledger/o2/journal/2026-11-20/",
            "runs/o2/2026-11-20/r.json",
        ] {
            assert!(is_evidence(key), "{key}");
        }
        for key in [
            "ledger/o2/days/2026-11-20.json",
            "ledger/o2/leases/2026-11-20.json",
            "checkpoints/o2.json",
            "reports/o2/2026-11-20.json",
            "ledger/o2/imported/alice@contoso.com/ab.json",
        ] {
            assert!(!is_evidence(key), "{key}");
        }
    }

    #[tokio::test]
    async fn each_key_goes_to_its_side() {
        let (e, s) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let split = SplitStage::new(
            Arc::new(LocalStage::new(e.path())),
            Arc::new(LocalStage::new(s.path())),
        );
        split
            .put_new("runs/o2/2026-11-20/r.json", b"{}")
            .await
            .unwrap();
        split.put("checkpoints/o2.json", b"{}").await.unwrap();
        assert!(e.path().join("runs/o2/2026-11-20/r.json").exists());
        assert!(s.path().join("checkpoints/o2.json").exists());
        assert!(!e.path().join("checkpoints").exists());
        assert_eq!(
            split.list("runs/o2/2026-11-20/").await.unwrap(),
            vec!["runs/o2/2026-11-20/r.json".to_string()]
        );
    }
}

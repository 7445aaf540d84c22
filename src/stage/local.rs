//! The stage in a local directory (the embedded default).
//!
//! Create-only writes go to a temporary file that is synced and then hard-linked into place:
//! the link fails when the name exists, so two writers can never both win, and a crash leaves
//! either the whole object or none of it.

use super::{check_key, Created, Stage, StageError, Version};
use async_trait::async_trait;
use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A directory holding the stage's objects as files.
#[derive(Debug)]
pub struct LocalStage {
    root: PathBuf,
    counter: AtomicU64,
}

impl LocalStage {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalStage {
            root: root.into(),
            counter: AtomicU64::new(0),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, operation: &'static str, key: &str) -> Result<PathBuf, StageError> {
        check_key(key).map_err(|m| self.error(operation, key, m))?;
        Ok(self.root.join(key))
    }

    fn error(&self, operation: &'static str, key: &str, message: impl ToString) -> StageError {
        StageError {
            stage: self.describe(),
            operation,
            key: key.to_string(),
            message: message.to_string(),
        }
    }

    /// A temporary name next to `target`, unique to this process and call.
    fn temp_for(&self, target: &Path) -> PathBuf {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        target.with_file_name(format!(".tmp.{}.{n}", std::process::id()))
    }
}

/// Writes and syncs `temp`, creating the directory when needed. A write that fails (a full
/// disk) leaves no part of itself behind.
fn write_temp(temp: &Path, bytes: &[u8]) -> std::io::Result<()> {
    create_dirs(temp.parent().expect("keys have a parent"))?;
    let written = fs::File::create(temp).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_all()
    });
    if written.is_err() {
        let _ = fs::remove_file(temp);
    }
    written
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
}

/// Creates `dir` and any missing parents, syncing each parent a directory was made in, so
/// that a new day's directory outlives a power cut with the file synced into it.
fn create_dirs(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(parent) = parent {
        create_dirs(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => parent.map_or(Ok(()), sync_dir),
        Err(e) if e.kind() == ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

#[async_trait]
impl Stage for LocalStage {
    async fn put_new(&self, key: &str, bytes: &[u8]) -> Result<Created, StageError> {
        let target = self.path("create", key)?;
        if target.exists() {
            return Ok(Created::AlreadyExists);
        }
        let temp = self.temp_for(&target);
        let bytes = bytes.to_vec();
        let outcome = blocking(move || {
            write_temp(&temp, &bytes)?;
            let linked = fs::hard_link(&temp, &target);
            let _ = fs::remove_file(&temp);
            match linked {
                Ok(()) => {
                    sync_dir(target.parent().expect("keys have a parent"))?;
                    Ok(Created::New)
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(Created::AlreadyExists),
                Err(e) => Err(e),
            }
        })
        .await;
        outcome.map_err(|e| self.error("create", key, e))
    }

    async fn put(&self, key: &str, bytes: &[u8]) -> Result<(), StageError> {
        let target = self.path("write", key)?;
        let temp = self.temp_for(&target);
        let bytes = bytes.to_vec();
        blocking(move || {
            write_temp(&temp, &bytes)?;
            fs::rename(&temp, &target)?;
            sync_dir(target.parent().expect("keys have a parent"))
        })
        .await
        .map_err(|e| self.error("write", key, e))
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StageError> {
        let path = self.path("read", key)?;
        match blocking(move || fs::read(path)).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.error("read", key, e)),
        }
    }

    async fn size(&self, key: &str) -> Result<Option<u64>, StageError> {
        let path = self.path("read", key)?;
        match blocking(move || fs::metadata(path)).await {
            Ok(meta) => Ok(Some(meta.len())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.error("read", key, e)),
        }
    }

    async fn get_versioned(&self, key: &str) -> Result<Option<(Vec<u8>, Version)>, StageError> {
        Ok(self.get(key).await?.map(|bytes| {
            let version = Version(crate::item::sha256_hex(&bytes));
            (bytes, version)
        }))
    }

    async fn put_if(
        &self,
        key: &str,
        bytes: &[u8],
        expected: Option<&Version>,
    ) -> Result<Option<Version>, StageError> {
        let target = self.path("write", key)?;
        let temp = self.temp_for(&target);
        let bytes = bytes.to_vec();
        let expected = expected.cloned();
        blocking(move || {
            // Compare and swap under a lock file, so that daemons sharing the directory
            // never both win.
            let _lock = LockFile::acquire(&target)?;
            let current = match fs::read(&target) {
                Ok(current) => Some(Version(crate::item::sha256_hex(&current))),
                Err(e) if e.kind() == ErrorKind::NotFound => None,
                Err(e) => return Err(e),
            };
            if current != expected {
                return Ok(None);
            }
            let version = Version(crate::item::sha256_hex(&bytes));
            write_temp(&temp, &bytes)?;
            fs::rename(&temp, &target)?;
            sync_dir(target.parent().expect("keys have a parent"))?;
            Ok(Some(version))
        })
        .await
        .map_err(|e| self.error("write", key, e))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StageError> {
        let trimmed = prefix.trim_end_matches('/');
        let dir = self.path("list", trimmed)?;
        let root = self.root.clone();
        blocking(move || {
            let mut keys = Vec::new();
            let mut pending = vec![dir];
            while let Some(dir) = pending.pop() {
                let entries = match fs::read_dir(&dir) {
                    Ok(entries) => entries,
                    Err(e) if e.kind() == ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                };
                for entry in entries {
                    let entry = entry?;
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if name.starts_with('.') {
                        continue;
                    }
                    if entry.file_type()?.is_dir() {
                        pending.push(entry.path());
                    } else if let Ok(relative) = entry.path().strip_prefix(&root) {
                        keys.push(relative.to_string_lossy().replace('\\', "/"));
                    }
                }
            }
            Ok(keys)
        })
        .await
        .map_err(|e| self.error("list", prefix, e))
    }

    fn describe(&self) -> String {
        format!("local directory {}", self.root.display())
    }

    async fn probe(&self) -> Result<String, StageError> {
        let proven = super::probe_directory(&self.root)
            .map_err(|e| self.error("write", "(a probe file)", e))?;
        Ok(format!("{} {proven}", self.describe()))
    }
}

/// An exclusive lock next to an object, removed on drop. A lock older than 30 s was left by
/// a process that died inside the few milliseconds it is held, and is broken.
struct LockFile(PathBuf);

impl LockFile {
    fn acquire(target: &Path) -> std::io::Result<LockFile> {
        let path = target.with_file_name(format!(
            ".{}.lock",
            target.file_name().unwrap_or_default().to_string_lossy()
        ));
        fs::create_dir_all(path.parent().expect("keys have a parent"))?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(_) => return Ok(LockFile(path)),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    let stale = fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .map(|t| {
                            t.elapsed().unwrap_or_default() > std::time::Duration::from_secs(30)
                        })
                        .unwrap_or(false);
                    if stale {
                        let _ = fs::remove_file(&path);
                    } else if std::time::Instant::now() > deadline {
                        return Err(std::io::Error::new(
                            ErrorKind::TimedOut,
                            "the object is locked",
                        ));
                    } else {
                        std::thread::sleep(std::time::Duration::from_millis(5));
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for LockFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn create_only_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let stage = LocalStage::new(dir.path());
        let key = "staged/o2/2026-11-20/a@contoso.com/k.eml";
        assert_eq!(stage.put_new(key, b"first").await.unwrap(), Created::New);
        assert_eq!(
            stage.put_new(key, b"second").await.unwrap(),
            Created::AlreadyExists
        );
        assert_eq!(stage.get(key).await.unwrap().unwrap(), b"first");
        assert!(stage.get(key).await.unwrap().is_some());
        assert_eq!(stage.get("nothing/here").await.unwrap(), None);
        // No temporary files are left behind.
        let names: Vec<_> = fs::read_dir(dir.path().join("staged/o2/2026-11-20/a@contoso.com"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("k.eml")]);
    }

    #[tokio::test]
    async fn conditional_writes_and_listing() {
        let dir = tempfile::tempdir().unwrap();
        let stage = LocalStage::new(dir.path());
        let v1 = stage.put_if("l/a.json", b"1", None).await.unwrap().unwrap();
        assert_eq!(
            stage.put_if("l/a.json", b"x", None).await.unwrap(),
            None,
            "exists already"
        );
        let v2 = stage
            .put_if("l/a.json", b"2", Some(&v1))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            stage.put_if("l/a.json", b"3", Some(&v1)).await.unwrap(),
            None,
            "stale version"
        );
        let (bytes, version) = stage.get_versioned("l/a.json").await.unwrap().unwrap();
        assert_eq!((bytes.as_slice(), version), (&b"2"[..], v2));
        stage.put_new("l/b/c.eml", b"c").await.unwrap();
        let mut keys = stage.list("l/").await.unwrap();
        keys.sort();
        assert_eq!(keys, vec!["l/a.json", "l/b/c.eml"]);
        assert!(stage.list("nothing/").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn put_replaces_and_bad_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let stage = LocalStage::new(dir.path());
        stage.put("checkpoints/o2.json", b"1").await.unwrap();
        stage.put("checkpoints/o2.json", b"2").await.unwrap();
        assert_eq!(
            stage.get("checkpoints/o2.json").await.unwrap().unwrap(),
            b"2"
        );
        let e = stage.put("../escape", b"x").await.unwrap_err();
        assert!(e.to_string().contains("'../escape'"), "{e}");
    }
}

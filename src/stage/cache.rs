//! A local copy of the messages this daemon stages, so that delivering them does not read
//! them back from a remote stage (`stage.cache_path`).
//!
//! A day is collected, then delivered: every staged message is written to the stage and,
//! some time later, read back from it. With an Azure stage that is one download per copy.
//! The cache keeps each message this daemon created in the stage (a create-only write that
//! found nothing there) in a local directory as well, and a read of it takes the local copy
//! once and removes it; a message someone else staged, or one the cache let go, is read from
//! the stage as before. The stage stays the record: the cache never answers for a key the
//! stage does not hold, never holds a state object, and delivery checks every message it
//! reads against the SHA-256 the collection listed for it.
//!
//! The cache is bounded (`stage.cache_max_bytes`) and split into generations of an eighth of
//! the bound each: messages go into the newest, and when one would overflow the bound, the
//! oldest generation is let go whole. What the cache remembers is a few numbers per
//! generation, however many messages it holds: each message is a file named by the SHA-256 of
//! its key, found by looking in each generation. It is scratch: whatever a previous process
//! left in the directory is removed when the daemon starts, and a file that cannot be written
//! or read is simply not used (with a warning): the stage has the message.

use super::{Created, Stage, StageError, Version};
use async_trait::async_trait;
use bytes::Bytes;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// The prefix of the keys the cache keeps: staged messages (and the files left out of them).
const CACHED: &str = "staged/";

/// Bytes the cache holds at most unless configured (`stage.cache_max_bytes`).
pub const DEFAULT_CACHE_MAX_BYTES: u64 = 4 * 1024 * 1024 * 1024;

/// How many parts the bound is split into: the oldest part is let go at once.
const GENERATIONS: u64 = 8;

/// A stage whose staged messages written by this process are also kept locally, read once
/// from there.
pub struct CachedStage {
    inner: Arc<dyn Stage>,
    root: PathBuf,
    most: u64,
    /// This process's own folder under `root`, made at the first message kept (so that
    /// `check` or `report` leave the directory alone); None when it could not be made.
    own: OnceLock<Option<Own>>,
    generations: Mutex<Generations>,
    /// Whether a failure of the directory was logged already (one warning, not one per copy).
    warned: AtomicBool,
}

/// A process's folder in the cache, locked for as long as the process lives, so that
/// daemons sharing one `cache_path` never remove each other's messages.
struct Own {
    dir: PathBuf,
    _lock: std::fs::File,
}

/// The lock file in a process's folder.
const LOCK: &str = "lock";

/// The generations the cache holds, the oldest first: each one's number and the bytes of its
/// messages not yet read.
#[derive(Default)]
struct Generations {
    live: VecDeque<(u64, u64)>,
    next: u64,
}

impl Generations {
    fn held(&self) -> u64 {
        self.live.iter().map(|(_, held)| held).sum()
    }

    /// Counts `size` bytes into the newest generation, after letting go of the oldest
    /// generations until they fit under `most` (their numbers go to `gone`), and starting a
    /// new generation when the newest has its share; returns the generation's number.
    fn take_room(&mut self, size: u64, most: u64, gone: &mut Vec<u64>) -> u64 {
        while !self.live.is_empty() && self.held() + size > most {
            gone.extend(self.live.pop_front().map(|(n, _)| n));
        }
        let share = (most / GENERATIONS).max(1);
        match self.live.back_mut() {
            Some((n, held)) if *held + size <= share || *held == 0 => {
                *held += size;
                *n
            }
            _ => {
                let n = self.next;
                self.next += 1;
                self.live.push_back((n, size));
                n
            }
        }
    }

    /// Gives back `size` bytes of generation `n`, if it is still held; a generation older
    /// than the newest that holds nothing more is let go (true: its folder can be removed),
    /// so that a daemon whose days are all read stays at one generation.
    fn release(&mut self, n: u64, size: u64) -> bool {
        let newest = self.live.back().map(|(g, _)| *g);
        let Some(at) = self.live.iter().position(|(g, _)| *g == n) else {
            return false;
        };
        let held = &mut self.live[at].1;
        *held = held.saturating_sub(size);
        if *held > 0 || newest == Some(n) {
            return false;
        }
        self.live.remove(at);
        true
    }

    fn is_live(&self, n: u64) -> bool {
        self.live.iter().any(|(g, _)| *g == n)
    }

    /// The live generations, the newest first.
    fn newest_first(&self) -> Vec<u64> {
        self.live.iter().rev().map(|(n, _)| *n).collect()
    }
}

/// A generation's folder in a process's folder.
fn generation(own: &Path, n: u64) -> PathBuf {
    own.join(format!("g{n}"))
}

/// The file a message is kept in, within its generation's folder.
fn file_name(key: &str) -> String {
    crate::item::sha256_hex(key.as_bytes())
}

impl CachedStage {
    /// `inner` with a cache of at most `most` bytes under `root`; nothing is made on disk
    /// until a message is kept.
    pub fn new(inner: Arc<dyn Stage>, root: &Path, most: u64) -> CachedStage {
        CachedStage {
            inner,
            root: root.to_path_buf(),
            most,
            own: OnceLock::new(),
            generations: Mutex::new(Generations::default()),
            warned: AtomicBool::new(false),
        }
    }

    /// This process's folder, made (and the folders of processes gone swept) on first use.
    fn own(&self) -> Option<&Path> {
        let own = self.own.get_or_init(|| match open_own(&self.root) {
            Ok(own) => Some(own),
            Err(e) => {
                self.warn("cannot be made", &e);
                None
            }
        });
        own.as_ref().map(|o| o.dir.as_path())
    }

    /// The bytes the cache holds now.
    pub fn held(&self) -> u64 {
        self.generations.lock().expect("never poisoned").held()
    }

    fn warn(&self, what: &str, e: &std::io::Error) {
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(cache = %self.root.display(), error = %e,
                "the stage cache {what}; messages are read from the stage instead");
        }
    }

    /// Keeps `bytes` as `key`, letting the oldest generations go to make room; a message
    /// larger than the whole cache is not kept.
    async fn keep(&self, key: &str, bytes: Bytes) {
        let size = bytes.len() as u64;
        if size > self.most || super::check_key(key).is_err() {
            return;
        }
        let Some(own) = self.own() else {
            return;
        };
        let mut gone = Vec::new();
        // Counted now, so that writers at once share the bound.
        let n = self
            .generations
            .lock()
            .expect("never poisoned")
            .take_room(size, self.most, &mut gone);
        let gone: Vec<PathBuf> = gone.into_iter().map(|g| generation(own, g)).collect();
        let folder = generation(own, n);
        let target = folder.join(file_name(key));
        let temp = own.join(format!("tmp-{}", next_temp()));
        let written = tokio::task::spawn_blocking(move || -> std::io::Result<PathBuf> {
            // A writer still placing a file in a generation let go removes it itself (below).
            for old in gone {
                let _ = std::fs::remove_dir_all(&old);
            }
            std::fs::create_dir_all(&folder)?;
            std::fs::write(&temp, &bytes)?;
            let placed = std::fs::rename(&temp, &target);
            if placed.is_err() {
                let _ = std::fs::remove_file(&temp);
            }
            placed.map(|()| target)
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        match written {
            Err(e) => {
                self.give_back(own, n, size).await;
                self.warn("cannot write", &e);
            }
            // Let go while the file was written: whoever let it go may have removed the folder
            // before the file was placed, so the file is this writer's to remove.
            Ok(target) if !self.is_live(n) => {
                let _ = tokio::task::spawn_blocking(move || {
                    let _ = std::fs::remove_file(&target);
                    target.parent().map(std::fs::remove_dir)
                })
                .await;
            }
            Ok(_) => {}
        }
    }

    fn is_live(&self, n: u64) -> bool {
        self.generations.lock().expect("never poisoned").is_live(n)
    }

    /// Gives back what a message counted in generation `n`, removing the generation's folder
    /// if that let it go.
    async fn give_back(&self, own: &Path, n: u64, size: u64) {
        let emptied = self
            .generations
            .lock()
            .expect("never poisoned")
            .release(n, size);
        if emptied {
            let folder = generation(own, n);
            let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir(folder)).await;
        }
    }

    /// The local copy of `key`, removed from the cache; None when it holds none.
    async fn take(&self, key: &str) -> Option<Vec<u8>> {
        let newest_first = self
            .generations
            .lock()
            .expect("never poisoned")
            .newest_first();
        if newest_first.is_empty() {
            return None;
        }
        let own = self.own()?;
        let dir = own.to_path_buf();
        let name = file_name(key);
        let read = tokio::task::spawn_blocking(move || {
            for n in newest_first {
                let path = generation(&dir, n).join(&name);
                match std::fs::read(&path) {
                    Ok(bytes) => {
                        let _ = std::fs::remove_file(&path);
                        return Ok(Some((n, bytes)));
                    }
                    // Not kept there, or its generation let go meanwhile.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(None)
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        match read {
            Ok(Some((n, bytes))) => {
                self.give_back(own, n, bytes.len() as u64).await;
                Some(bytes)
            }
            Ok(None) => None,
            Err(e) => {
                self.warn("cannot read", &e);
                None
            }
        }
    }
}

#[async_trait]
impl Stage for CachedStage {
    async fn put_new(&self, key: &str, bytes: &[u8]) -> Result<Created, StageError> {
        self.put_new_shared(key, Bytes::copy_from_slice(bytes))
            .await
    }

    async fn put_new_shared(&self, key: &str, bytes: Bytes) -> Result<Created, StageError> {
        let created = self.inner.put_new_shared(key, bytes.clone()).await?;
        if created == Created::New && key.starts_with(CACHED) {
            self.keep(key, bytes).await;
        }
        Ok(created)
    }

    async fn put(&self, key: &str, bytes: &[u8]) -> Result<(), StageError> {
        self.inner.put(key, bytes).await
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StageError> {
        if key.starts_with(CACHED) {
            if let Some(bytes) = self.take(key).await {
                return Ok(Some(bytes));
            }
        }
        self.inner.get(key).await
    }

    async fn size(&self, key: &str) -> Result<Option<u64>, StageError> {
        self.inner.size(key).await
    }

    async fn get_versioned(&self, key: &str) -> Result<Option<(Vec<u8>, Version)>, StageError> {
        self.inner.get_versioned(key).await
    }

    async fn put_if(
        &self,
        key: &str,
        bytes: &[u8],
        expected: Option<&Version>,
    ) -> Result<Option<Version>, StageError> {
        self.inner.put_if(key, bytes, expected).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StageError> {
        self.inner.list(prefix).await
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn prepare(&self) -> Result<(), StageError> {
        self.inner.prepare().await
    }

    async fn probe(&self) -> Result<String, StageError> {
        let stage = self.inner.probe().await?;
        let cache = super::probe_directory(&self.root).unwrap_or_else(|e| {
            format!("cannot be written ({e}); messages are read from the stage")
        });
        Ok(format!(
            "{stage}; the local cache {} {cache}",
            self.root.display()
        ))
    }
}

/// Takes an exclusive lock on `file` without waiting; the kernel lets it go when the process
/// ends, however it ends.
#[cfg(unix)]
fn try_lock(file: &std::fs::File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor the File owns, open for the call's length.
    match unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// Without flock, no folder is known to be gone: none is removed.
#[cfg(not(unix))]
fn try_lock(_file: &std::fs::File) -> std::io::Result<()> {
    Err(std::io::Error::other("no file locks here"))
}

/// A name for a file being written, unique within the process.
fn next_temp() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Makes this process's folder under `root`, locked, after removing the folders of
/// processes that are gone (their lock is free: the kernel let it go with them).
fn open_own(root: &Path) -> std::io::Result<Own> {
    std::fs::create_dir_all(root)?;
    for entry in std::fs::read_dir(root)? {
        let path = entry?.path();
        if !path.is_dir() {
            continue;
        }
        let gone = match std::fs::File::open(path.join(LOCK)) {
            Ok(lock) => try_lock(&lock).is_ok(),
            // A folder without its lock never got one: its process died making it.
            Err(e) => e.kind() == std::io::ErrorKind::NotFound,
        };
        if gone {
            match std::fs::remove_dir_all(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = root.join(format!("p{}-{nanos}", std::process::id()));
    std::fs::create_dir(&dir)?;
    let lock = std::fs::File::create(dir.join(LOCK))?;
    try_lock(&lock)?;
    Ok(Own { dir, _lock: lock })
}

#[cfg(test)]
mod tests;

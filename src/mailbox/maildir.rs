//! A Maildir++ tree (the embedded default): `<root>/<mailbox>/` is each mailbox's Maildir,
//! and a connector's folder is `.INBOX.<folder>/` in it, which Dovecot (default namespace,
//! Maildir++ layout) and other Maildir readers show as a subfolder of the Inbox.
//!
//! File names are deterministic, `<unix time>.<item key>.comms-archiver:2,S`, so a message
//! is found again by name and a second import of the same item cannot create a second file.
//! The `S` flag stores it as read; the file's mtime is the item's time, which Maildir readers
//! take as the received date.

use super::{Delivery, Mailbox, MailboxError};
use std::collections::HashSet;
use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

/// A directory of Maildir++ mailboxes, one per address.
#[derive(Debug)]
pub struct MaildirTree {
    root: PathBuf,
    ready: Mutex<HashSet<(String, String)>>,
    counter: AtomicU64,
}

impl MaildirTree {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        MaildirTree {
            root: root.into(),
            ready: Mutex::new(HashSet::new()),
            counter: AtomicU64::new(0),
        }
    }

    /// The Maildir of a folder of a mailbox.
    pub fn folder_path(&self, mailbox: &str, folder: &str) -> PathBuf {
        self.root.join(mailbox).join(format!(".INBOX.{folder}"))
    }

    fn file_name(delivery: &Delivery<'_>) -> String {
        format!(
            "{}.{}.comms-archiver:2,S",
            delivery.time.timestamp(),
            delivery.key
        )
    }

    fn check(delivery: &Delivery<'_>) -> Result<(), MailboxError> {
        crate::checks::folder_name(delivery.folder)
            .and_then(|()| crate::stage::check_key(delivery.mailbox))
            .map_err(|reason| MailboxError::Rejected {
                mailbox: delivery.mailbox.to_string(),
                reason,
            })
    }

    /// Creates the mailbox and folder directories and subscribes the folder, once per run.
    fn ensure_folder(&self, mailbox: &str, folder: &str) -> std::io::Result<PathBuf> {
        let dir = self.folder_path(mailbox, folder);
        let id = (mailbox.to_string(), folder.to_string());
        if self.ready.lock().expect("not poisoned").contains(&id) {
            return Ok(dir);
        }
        let home = self.root.join(mailbox);
        for maildir in [&home, &dir] {
            for sub in ["cur", "new", "tmp"] {
                fs::create_dir_all(maildir.join(sub))?;
            }
        }
        // Maildir++ marks subfolders with this empty file.
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("maildirfolder"))?;
        subscribe(&home, &format!("INBOX.{folder}"))?;
        self.ready.lock().expect("not poisoned").insert(id);
        Ok(dir)
    }
}

/// Adds a folder to the Maildir's `subscriptions` file (one name a line) if it is not there.
fn subscribe(home: &Path, name: &str) -> std::io::Result<()> {
    let path = home.join("subscriptions");
    let current = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    if current.lines().any(|l| l == name) {
        return Ok(());
    }
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    writeln!(file, "{name}")
}

#[async_trait::async_trait]
impl Mailbox for MaildirTree {
    async fn probe(&self, _sample: Option<&str>, _connect: bool) -> Result<String, MailboxError> {
        let proven = crate::stage::probe_directory(&self.root).map_err(|e| {
            MailboxError::Unavailable(format!(
                "the Maildir tree {} cannot be written ({e}): check mailbox.path and its \
                 permissions",
                self.root.display()
            ))
        })?;
        Ok(format!("{} {proven}", self.describe()))
    }

    async fn contains(&self, delivery: &Delivery<'_>) -> Result<bool, MailboxError> {
        Self::check(delivery)?;
        let dir = self.folder_path(delivery.mailbox, delivery.folder);
        let name = Self::file_name(delivery);
        let base = name.split(':').next().expect("split yields one part");
        Ok(dir.join("cur").join(&name).exists() || dir.join("new").join(base).exists())
    }

    async fn append(&self, delivery: &Delivery<'_>) -> Result<(), MailboxError> {
        Self::check(delivery)?;
        let unavailable = |e: std::io::Error| {
            MailboxError::Unavailable(format!(
                "maildir {}: cannot store the message for {} in '{}': {e}",
                self.root.display(),
                delivery.mailbox,
                delivery.folder
            ))
        };
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let name = Self::file_name(delivery);
        let dir = self
            .ensure_folder(delivery.mailbox, delivery.folder)
            .map_err(unavailable)?;
        let temp = dir
            .join("tmp")
            .join(format!("{}.{}.{n}", name, std::process::id()));
        let target = dir.join("cur").join(&name);
        let message = delivery.message.clone();
        let time: SystemTime = delivery.time.into();
        let stored = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let mut file = fs::File::create(&temp)?;
            file.write_all(&message)?;
            file.set_times(fs::FileTimes::new().set_modified(time).set_accessed(time))?;
            file.sync_all()?;
            drop(file);
            let linked = fs::hard_link(&temp, &target);
            let _ = fs::remove_file(&temp);
            match linked {
                // Already there: the same item, rendered the same way.
                Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
                other => other,
            }
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        stored.map_err(unavailable)
    }

    fn describe(&self) -> String {
        format!("maildir {}", self.root.display())
    }

    /// The tree's absolute path: the same tree reached from another working directory is the
    /// same destination.
    fn destination(&self) -> String {
        let root = std::path::absolute(&self.root).unwrap_or_else(|_| self.root.clone());
        format!("maildir {}", root.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::item::ItemKey;
    use chrono::{TimeZone, Utc};

    #[tokio::test]
    async fn appends_once_as_read_with_the_item_time() {
        let dir = tempfile::tempdir().unwrap();
        let tree = MaildirTree::new(dir.path());
        let key = ItemKey::new("o2", "1");
        let time = Utc.with_ymd_and_hms(2026, 11, 20, 8, 15, 2).unwrap();
        let d = Delivery {
            mailbox: "alice@contoso.com",
            folder: "O2 SMS and Voice Network Archiver",
            key: &key,
            time,
            message: &bytes::Bytes::from_static(b"Subject: hi\r\n\r\nbody\r\n"),
        };
        assert!(!tree.contains(&d).await.unwrap());
        tree.append(&d).await.unwrap();
        tree.append(&d).await.unwrap();
        assert!(tree.contains(&d).await.unwrap());

        let folder = dir
            .path()
            .join("alice@contoso.com/.INBOX.O2 SMS and Voice Network Archiver");
        let files: Vec<_> = fs::read_dir(folder.join("cur")).unwrap().collect();
        assert_eq!(files.len(), 1);
        let file = files[0].as_ref().unwrap();
        assert!(file.file_name().to_string_lossy().ends_with(":2,S"));
        let mtime = file.metadata().unwrap().modified().unwrap();
        assert_eq!(mtime, SystemTime::from(time));
        assert!(folder.join("maildirfolder").exists());
        assert_eq!(fs::read_dir(folder.join("tmp")).unwrap().count(), 0);
        let subs = fs::read_to_string(dir.path().join("alice@contoso.com/subscriptions")).unwrap();
        assert_eq!(subs, "INBOX.O2 SMS and Voice Network Archiver\n");
    }
}

//! TeleMessage's EML export drop, as its SFTP delivery documents it: ZIP files named
//! `YYYYMMDD0000-TeleMessage_<file#>_<TimeZipped>.zip`, each holding EML files and a `.mf`
//! manifest whose `Count:` must equal the number of EMLs, whose names must match them, and
//! none of whose files may be empty. A ZIP that fails any of this is a reconciliation
//! failure: nothing of the day is imported and the day stays open.

use super::eml::{EmlFlavor, EmlFormat};
use super::{ItemStream, Pulled, Source, SourceError};
use async_trait::async_trait;
use chrono::NaiveDate;
use std::collections::{BTreeSet, VecDeque};
use std::io::Read;
use std::path::{Path, PathBuf};

/// A directory TeleMessage delivers EML ZIPs into.
pub struct ZipDropSource {
    root: PathBuf,
    format: EmlFormat,
    max_item_bytes: u64,
    max_delivery_inflated: u64,
}

/// The most a manifest may inflate to; a longer one is a reconciliation error.
const MAX_MANIFEST_BYTES: u64 = 1024 * 1024;
/// The most a day's ZIPs may inflate to together; more is a reconciliation error of the day,
/// refused whole rather than half imported.
pub const MAX_DELIVERY_INFLATED: u64 = 8 * 1024 * 1024 * 1024;

impl ZipDropSource {
    pub fn new(root: impl Into<PathBuf>, region: phonenumber::country::Id) -> Self {
        ZipDropSource {
            root: root.into(),
            format: EmlFormat {
                flavor: EmlFlavor::TeleMessage,
                region,
            },
            max_item_bytes: crate::item::DEFAULT_MAX_ITEM_BYTES,
            max_delivery_inflated: MAX_DELIVERY_INFLATED,
        }
    }

    /// The same source, refusing a day whose ZIPs inflate past `bytes` together.
    pub fn with_max_delivery_inflated(mut self, bytes: u64) -> Self {
        self.max_delivery_inflated = bytes;
        self
    }

    /// The same source, inflating no message past `bytes`: a longer one is failed
    /// `size_exceeded` from its header block, the rest never inflated.
    pub fn with_max_item_bytes(mut self, bytes: u64) -> Self {
        self.max_item_bytes = bytes;
        self
    }
}

/// The ZIPs of a day, ordered by file number.
fn day_zips(root: &Path, day: NaiveDate) -> std::io::Result<Vec<PathBuf>> {
    let prefix = format!("{}0000-TeleMessage_", day.format("%Y%m%d"));
    let mut zips: Vec<(u64, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(&prefix) else {
            continue;
        };
        if !name.ends_with(".zip") {
            continue;
        }
        let number = rest
            .split('_')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(u64::MAX);
        zips.push((number, entry.path()));
    }
    zips.sort();
    Ok(zips.into_iter().map(|(_, p)| p).collect())
}

/// Checks one ZIP against its manifest; returns the EML names in manifest order.
/// What one ZIP holds once checked: its EML names in manifest order, and the bytes its
/// entries inflate to (each counted up to one byte past the item limit).
struct Checked {
    names: Vec<String>,
    inflated: u64,
}

/// Checks one ZIP against its manifest, inflating every entry once (into nothing, each at
/// most `cap + 1` bytes): a corrupt entry refuses the whole delivery before anything of it
/// is imported, and no size an entry's header declares is trusted.
fn reconcile(path: &Path, cap: u64) -> Result<Checked, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| format!("not a readable ZIP: {e}"))?;
    let mut emls = BTreeSet::new();
    let mut manifests = Vec::new();
    let mut inflated = 0u64;
    for i in 0..archive.len() {
        let entry = archive.by_index(i).map_err(|e| format!("entry {i}: {e}"))?;
        let name = entry.name().to_string();
        if entry.is_dir() {
            continue;
        }
        let size = std::io::copy(&mut entry.take(cap + 1), &mut std::io::sink())
            .map_err(|e| format!("{name} cannot be inflated: {e}"))?;
        inflated += size;
        if size == 0 {
            return Err(format!("{name} is empty"));
        }
        if name.to_ascii_lowercase().ends_with(".eml") {
            emls.insert(name);
        } else if name.to_ascii_lowercase().ends_with(".mf") {
            manifests.push(name);
        }
    }
    let [manifest] = manifests.as_slice() else {
        return Err(format!(
            "expected one .mf manifest, found {}",
            manifests.len()
        ));
    };
    // Inflated with a cap: the size its header declares is never trusted.
    let mut raw = Vec::new();
    archive
        .by_name(manifest)
        .map_err(|e| format!("{manifest}: {e}"))?
        .take(MAX_MANIFEST_BYTES + 1)
        .read_to_end(&mut raw)
        .map_err(|e| format!("{manifest}: {e}"))?;
    if raw.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(format!(
            "{manifest} inflates to more than {MAX_MANIFEST_BYTES} bytes; it is no manifest"
        ));
    }
    let text = String::from_utf8(raw).map_err(|e| format!("{manifest}: {e}"))?;
    let mut count = None;
    let mut listed = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        match line.split_once(':') {
            Some((key, value)) if key.trim().eq_ignore_ascii_case("count") => {
                count = Some(value.trim().parse::<usize>().map_err(|_| {
                    format!("{manifest}: Count '{}' is not a number", value.trim())
                })?);
            }
            Some((key, value)) if key.trim().eq_ignore_ascii_case("file") => {
                listed.push(value.trim().to_string())
            }
            _ => listed.push(line.to_string()),
        }
    }
    let count = count.ok_or_else(|| format!("{manifest} has no Count: line"))?;
    if count != emls.len() {
        return Err(format!(
            "{manifest} says Count: {count}, the ZIP holds {} EML files",
            emls.len()
        ));
    }
    let listed_set: BTreeSet<String> = listed.iter().cloned().collect();
    if listed_set != emls {
        let missing: Vec<_> = listed_set.difference(&emls).cloned().collect();
        let unlisted: Vec<_> = emls.difference(&listed_set).cloned().collect();
        return Err(format!(
            "{manifest} does not match the ZIP: listed but missing {missing:?}, present but unlisted {unlisted:?}"
        ));
    }
    Ok(Checked {
        names: listed,
        inflated,
    })
}

/// An entry inflated up to `cap` bytes; Err holds its first [`super::HEAD_BYTES`] when it
/// inflates past that (the size its header declares is never trusted, for allocation or
/// anything else).
fn read_entry(path: &Path, name: &str, cap: u64) -> std::io::Result<Result<Vec<u8>, Vec<u8>>> {
    let mut archive =
        zip::ZipArchive::new(std::fs::File::open(path)?).map_err(std::io::Error::other)?;
    let entry = archive.by_name(name).map_err(std::io::Error::other)?;
    let mut bytes = Vec::new();
    entry.take(cap + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > cap {
        bytes.truncate(super::HEAD_BYTES);
        return Ok(Err(bytes));
    }
    Ok(Ok(bytes))
}

#[async_trait]
impl Source for ZipDropSource {
    async fn open(&self, day: NaiveDate) -> Result<Box<dyn ItemStream>, SourceError> {
        super::drop_directory(&self.root).await?;
        let root = self.root.clone();
        let (cap, bound) = (self.max_item_bytes, self.max_delivery_inflated);
        let checked =
            tokio::task::spawn_blocking(move || -> Result<Vec<(PathBuf, String)>, SourceError> {
                let zips = day_zips(&root, day).map_err(|e| {
                    SourceError::Unavailable(format!("cannot list {}: {e}", root.display()))
                })?;
                if zips.is_empty() {
                    return Err(SourceError::NotReady(format!(
                    "no TeleMessage ZIP for {day} in {} yet ({}0000-TeleMessage_<n>_<time>.zip); \
                     the day stays open until it is delivered",
                    root.display(),
                    day.format("%Y%m%d")
                )));
                }
                let mut records = Vec::new();
                let mut inflated = 0u64;
                for zip in zips {
                    let checked = reconcile(&zip, cap).map_err(|why| {
                        SourceError::Reconciliation(format!("{}: {why}", zip.display()))
                    })?;
                    inflated += checked.inflated;
                    if inflated > bound {
                        return Err(SourceError::Reconciliation(format!(
                            "the ZIPs of {day} in {} inflate to more than {bound} bytes, the \
                             bound for one day's delivery; nothing of it is imported and the day \
                             stays open until the partner delivers it again",
                            root.display()
                        )));
                    }
                    records.extend(checked.names.into_iter().map(|n| (zip.clone(), n)));
                }
                Ok(records)
            })
            .await
            .map_err(|e| SourceError::Unavailable(e.to_string()))??;
        Ok(Box::new(ZipStream {
            records: checked.into(),
            format: self.format,
            max_item_bytes: self.max_item_bytes,
        }))
    }

    fn describe(&self) -> String {
        format!("TeleMessage EML ZIP drop {}", self.root.display())
    }

    async fn check(&self, _connect: bool) -> Result<String, SourceError> {
        super::drop_directory(&self.root).await?;
        Ok(format!("{} is there and readable", self.describe()))
    }
}

struct ZipStream {
    records: VecDeque<(PathBuf, String)>,
    format: EmlFormat,
    max_item_bytes: u64,
}

#[async_trait]
impl ItemStream for ZipStream {
    async fn next(&mut self) -> Result<Option<Pulled>, SourceError> {
        let Some((zip, name)) = self.records.pop_front() else {
            return Ok(None);
        };
        let (path, entry, cap) = (zip.clone(), name.clone(), self.max_item_bytes);
        let read = tokio::task::spawn_blocking(move || read_entry(&path, &entry, cap))
            .await
            .map_err(|e| SourceError::Unavailable(e.to_string()))?
            .map_err(|e| SourceError::Unavailable(format!("{}: {name}: {e}", zip.display())))?;
        let location = format!(
            "{} {name}",
            zip.file_name()
                .map(|f| f.to_string_lossy())
                .unwrap_or_default()
        );
        let bytes = match read {
            Ok(bytes) => bytes,
            Err(head) => {
                let detail = format!(
                    "the message inflates to more than the limit of {} bytes; it was not \
                     inflated past that",
                    self.max_item_bytes
                );
                return Ok(Some(super::pull_too_large(
                    &self.format,
                    &head,
                    location,
                    detail,
                )));
            }
        };
        Ok(Some(
            super::pull_message(&self.format, &bytes, location, self.max_item_bytes).await?,
        ))
    }
}

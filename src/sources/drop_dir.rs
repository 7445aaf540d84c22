//! The export drop transport: what a partner's SFTP delivery lands in.
//!
//! `<root>/<YYYY-MM-DD>/` holds one day's delivery: `MANIFEST.json` naming every record file
//! and its record count, the record files, and the media they refer to. Records are JSON
//! Lines (`.jsonl`, one record a line) or messages (`.eml`, one record a file), as the
//! partner's [`Wire`] says. The manifest is written last by the partner, so its presence
//! marks a finished delivery; the files are reconciled against it before anything is
//! imported.

use super::{ItemStream, MediaRef, Pulled, RecordFormat, Source, SourceError, Wire};
use crate::item::Attachment;
use async_trait::async_trait;
use chrono::NaiveDate;
use serde::Deserialize;
use std::collections::VecDeque;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Name of the manifest in each day's delivery.
pub const MANIFEST: &str = "MANIFEST.json";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    day: NaiveDate,
    files: Vec<ManifestFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestFile {
    name: String,
    records: u64,
}

/// A partner's export drop directory.
pub struct DropSource<F: RecordFormat> {
    root: PathBuf,
    format: Arc<F>,
    max_item_bytes: u64,
}

impl<F: RecordFormat> DropSource<F> {
    pub fn new(root: impl Into<PathBuf>, format: F) -> Self {
        DropSource {
            root: root.into(),
            format: Arc::new(format),
            max_item_bytes: crate::item::DEFAULT_MAX_ITEM_BYTES,
        }
    }

    /// The same source, never reading more of an item than `bytes`: a file that would take
    /// it over is failed `size_exceeded` by its size on disk, unread.
    pub fn with_max_item_bytes(mut self, bytes: u64) -> Self {
        self.max_item_bytes = bytes;
        self
    }
}

/// A file read whole when it is at most `cap` bytes; otherwise its size (on disk, or as far
/// as it was read when it grew meanwhile), nothing more read than `cap + 1` bytes.
async fn read_capped(path: &Path, cap: u64) -> std::io::Result<Result<Vec<u8>, u64>> {
    use tokio::io::AsyncReadExt;
    let file = tokio::fs::File::open(path).await?;
    let size = file.metadata().await?.len();
    if size > cap {
        return Ok(Err(size));
    }
    crate::pipeline::budget::before_reading(size).await;
    let mut data = Vec::with_capacity(size as usize);
    file.take(cap + 1).read_to_end(&mut data).await?;
    match data.len() as u64 > cap {
        true => Ok(Err(data.len() as u64)),
        false => Ok(Ok(data)),
    }
}

/// One line of a JSON Lines file, its end of line removed.
struct Line {
    /// The line, or nothing when it is longer than the cap.
    bytes: Vec<u8>,
    /// Its length in bytes.
    length: u64,
}

impl Line {
    fn is_blank(&self) -> bool {
        self.bytes.iter().all(u8::is_ascii_whitespace)
    }
}

/// The next line, held only while it is at most `cap` bytes; a longer one is skipped to its
/// end, counted but not kept.
async fn read_line_capped(
    reader: &mut BufReader<tokio::fs::File>,
    cap: u64,
) -> std::io::Result<Option<Line>> {
    let mut line = Line {
        bytes: Vec::new(),
        length: 0,
    };
    let mut any = false;
    loop {
        let buffer = reader.fill_buf().await?;
        if buffer.is_empty() {
            break;
        }
        any = true;
        let (part, done) = match buffer.iter().position(|&b| b == b'\n') {
            Some(i) => (&buffer[..i], Some(i + 1)),
            None => (buffer, None),
        };
        line.length += part.len() as u64;
        if line.length <= cap {
            line.bytes.extend_from_slice(part);
        } else {
            line.bytes = Vec::new();
        }
        let used = done.unwrap_or(part.len());
        reader.consume(used);
        if done.is_some() {
            break;
        }
    }
    if line.bytes.last() == Some(&b'\r') {
        line.bytes.pop();
        line.length -= 1;
    }
    Ok(any.then_some(line))
}

/// The first `bytes` of a file.
async fn read_head(path: &Path, bytes: usize) -> std::io::Result<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::with_capacity(bytes);
    tokio::fs::File::open(path)
        .await?
        .take(bytes as u64)
        .read_to_end(&mut head)
        .await?;
    Ok(head)
}

#[async_trait]
impl<F: RecordFormat> Source for DropSource<F> {
    async fn open(&self, day: NaiveDate) -> Result<Box<dyn ItemStream>, SourceError> {
        super::drop_directory(&self.root).await?;
        let dir = self.root.join(day.format("%Y-%m-%d").to_string());
        let manifest_path = dir.join(MANIFEST);
        let text = match tokio::fs::read_to_string(&manifest_path).await {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(SourceError::NotReady(format!(
                    "no finished delivery for {day}: {} does not exist yet; \
                     the day stays open until the partner delivers it",
                    manifest_path.display()
                )))
            }
            Err(e) => {
                return Err(SourceError::Unavailable(format!(
                    "cannot read {}: {e}",
                    manifest_path.display()
                )))
            }
        };
        let manifest: Manifest = serde_json::from_str(&text).map_err(|e| {
            SourceError::Reconciliation(format!(
                "{} is not a valid manifest: {e}",
                manifest_path.display()
            ))
        })?;
        if manifest.day != day {
            return Err(SourceError::Reconciliation(format!(
                "{} is for {}, not {day}",
                manifest_path.display(),
                manifest.day
            )));
        }
        reconcile(&dir, &manifest, F::WIRE).await?;
        Ok(Box::new(DropStream {
            dir,
            files: manifest.files.into_iter().map(|f| f.name).collect(),
            current: None,
            format: self.format.clone(),
            max_item_bytes: self.max_item_bytes,
        }))
    }

    fn describe(&self) -> String {
        format!("export drop {}", self.root.display())
    }

    async fn check(&self, _connect: bool) -> Result<String, SourceError> {
        super::drop_directory(&self.root).await?;
        Ok(format!("{} is there and readable", self.describe()))
    }
}

/// Checks every listed file exists, holds exactly its record count, and that no record file
/// is there unlisted; a mismatch keeps the whole delivery out.
async fn reconcile(dir: &Path, manifest: &Manifest, wire: Wire) -> Result<(), SourceError> {
    let mismatch = |m: String| SourceError::Reconciliation(format!("{}: {m}", dir.display()));
    let extension = match wire {
        Wire::Json => ".jsonl",
        Wire::Mime => ".eml",
    };
    for file in &manifest.files {
        check_relative(&file.name).map_err(&mismatch)?;
        if !file.name.ends_with(extension) {
            return Err(mismatch(format!("{} is not a {extension} file", file.name)));
        }
        let path = dir.join(&file.name);
        let handle = tokio::fs::File::open(&path).await.map_err(|e| {
            mismatch(format!(
                "manifest lists {} but it cannot be read: {e}",
                file.name
            ))
        })?;
        let count = match wire {
            Wire::Json => {
                let mut lines = BufReader::new(handle);
                let mut count = 0u64;
                // Counted without holding a line longer than any record may be.
                while let Some(line) = read_line_capped(&mut lines, super::RECONCILE_LINE_CAP)
                    .await
                    .map_err(|e| mismatch(format!("{}: {e}", file.name)))?
                {
                    if line.length > line.bytes.len() as u64 || !line.is_blank() {
                        count += 1;
                    }
                }
                count
            }
            Wire::Mime => {
                let size = handle
                    .metadata()
                    .await
                    .map_err(|e| mismatch(format!("{}: {e}", file.name)))?
                    .len();
                u64::from(size > 0)
            }
        };
        if count == 0 {
            return Err(mismatch(format!("{} is empty", file.name)));
        }
        if count != file.records {
            return Err(mismatch(format!(
                "manifest says {} holds {} records, it holds {count}",
                file.name, file.records
            )));
        }
    }
    let mut entries = tokio::fs::read_dir(dir)
        .await
        .map_err(|e| SourceError::Unavailable(format!("cannot list {}: {e}", dir.display())))?;
    while let Some(entry) = entries
        .next_entry()
        .await
        .map_err(|e| SourceError::Unavailable(format!("cannot list {}: {e}", dir.display())))?
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(extension) && !manifest.files.iter().any(|f| f.name == name) {
            return Err(mismatch(format!("{name} is not listed in the manifest")));
        }
    }
    Ok(())
}

fn check_relative(name: &str) -> Result<(), String> {
    let path = Path::new(name);
    if name.is_empty() || !path.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(format!("'{name}' is not a path inside the delivery"));
    }
    Ok(())
}

struct DropStream<F: RecordFormat> {
    dir: PathBuf,
    files: VecDeque<String>,
    current: Option<(String, u64, BufReader<tokio::fs::File>)>,
    format: Arc<F>,
    max_item_bytes: u64,
}

/// One record as read from the drop.
struct Record {
    file: String,
    /// 0 for a whole-file record.
    line: u64,
    bytes: Vec<u8>,
    /// A message file over the limit: its size; `bytes` is then only its head.
    too_large: Option<u64>,
}

impl<F: RecordFormat> DropStream<F> {
    /// The next record.
    async fn next_record(&mut self) -> Result<Option<Record>, SourceError> {
        if F::WIRE == Wire::Mime {
            let Some(name) = self.files.pop_front() else {
                return Ok(None);
            };
            let path = self.dir.join(&name);
            let unreadable = |e: std::io::Error| {
                SourceError::Unavailable(format!("{}/{name}: {e}", self.dir.display()))
            };
            let (bytes, too_large) = match read_capped(&path, self.max_item_bytes)
                .await
                .map_err(unreadable)?
            {
                Ok(bytes) => (bytes, None),
                Err(size) => (
                    read_head(&path, super::HEAD_BYTES)
                        .await
                        .map_err(unreadable)?,
                    Some(size),
                ),
            };
            return Ok(Some(Record {
                file: name,
                line: 0,
                bytes,
                too_large,
            }));
        }
        loop {
            if let Some((name, line_no, lines)) = &mut self.current {
                let line = read_line_capped(lines, self.max_item_bytes)
                    .await
                    .map_err(|e| {
                        SourceError::Unavailable(format!("{}/{name}: {e}", self.dir.display()))
                    })?;
                match line {
                    Some(line) => {
                        *line_no += 1;
                        let whole = line.length == line.bytes.len() as u64;
                        if whole && line.is_blank() {
                            continue;
                        }
                        return Ok(Some(Record {
                            file: name.clone(),
                            line: *line_no,
                            too_large: (!whole).then_some(line.length),
                            bytes: line.bytes,
                        }));
                    }
                    None => self.current = None,
                }
            }
            let Some(name) = self.files.pop_front() else {
                return Ok(None);
            };
            let file = tokio::fs::File::open(self.dir.join(&name))
                .await
                .map_err(|e| {
                    SourceError::Unavailable(format!("{}/{name}: {e}", self.dir.display()))
                })?;
            self.current = Some((name, 0, BufReader::new(file)));
        }
    }

    /// A file of the delivery, read only when it fits in the `left` bytes the item may still
    /// take.
    async fn fetch(&self, media: &MediaRef, left: u64) -> Result<Attachment, SourceError> {
        check_relative(&media.location).map_err(SourceError::Unavailable)?;
        let data = match read_capped(&self.dir.join(&media.location), left).await {
            Ok(Ok(data)) => data,
            Ok(Err(size)) => {
                return Err(SourceError::TooLarge(format!(
                    "the file is {size} bytes, so the item exceeds the limit of {} bytes; it was \
                     not read",
                    self.max_item_bytes
                )))
            }
            Err(e) => {
                return Err(SourceError::Unavailable(format!(
                    "the file cannot be read: {e}"
                )))
            }
        };
        Ok(Attachment {
            name: media.name.clone(),
            content_type: media.content_type.clone(),
            data,
        })
    }
}

#[async_trait]
impl<F: RecordFormat> ItemStream for DropStream<F> {
    async fn next(&mut self) -> Result<Option<Pulled>, SourceError> {
        let Some(record) = self.next_record().await? else {
            return Ok(None);
        };
        let location = match record.line {
            0 => record.file,
            n => format!("{} line {n}", record.file),
        };
        if let (Some(size), Wire::Json) = (record.too_large, F::WIRE) {
            // A record line longer than a whole item may be is no record that can be read.
            return Ok(Some(Pulled::Invalid {
                location,
                partner_id: None,
                reason: format!(
                    "the record is a line of {size} bytes, more than the limit of {} bytes for \
                     a whole item; it was not read",
                    self.max_item_bytes
                ),
            }));
        }
        if let Some(size) = record.too_large {
            let detail = format!(
                "the message is {size} bytes, so it exceeds the limit of {} bytes; it was not \
                 read past its header block",
                self.max_item_bytes
            );
            return Ok(Some(super::pull_too_large(
                self.format.as_ref(),
                &record.bytes,
                location,
                detail,
            )));
        }
        let this = &*self;
        let fetch = |media: MediaRef, left: u64| async move { this.fetch(&media, left).await };
        Ok(Some(
            super::pull(
                self.format.as_ref(),
                &record.bytes,
                location,
                self.max_item_bytes,
                fetch,
            )
            .await?,
        ))
    }
}

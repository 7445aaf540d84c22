//! A message's files: which an item has, how each is named and typed, the part that carries
//! it, and how the body lists them.

use super::header_text;
use crate::item::{Attachment, Content};
use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Body, SinglePart};
use std::fmt::Write;

/// The part that carries `file`: always base64, whatever the file holds. Sent as 7bit, a line
/// of a text file could pose as the boundary (which derives from the item key), and
/// transports may rewrite its line breaks.
pub(super) fn part(file: &Attachment) -> SinglePart {
    let content_type = ContentType::parse(&file_type(&file.content_type))
        .unwrap_or_else(|_| ContentType::parse(OCTET_STREAM).unwrap());
    let body = Body::new_with_encoding(file.data.clone(), ContentTransferEncoding::Base64)
        .expect("base64 carries any bytes");
    lettre::message::Attachment::new(name(&file.name)).body(body, content_type)
}

const OCTET_STREAM: &str = "application/octet-stream";

/// A file's content type as the message states it: the partner's type/subtype, with its
/// charset when it names one, and nothing else (a `name` would rename the file, a
/// `boundary` pose as structure). A composite type (multipart, message) would make the file
/// a MIME container of its own, and a type that does not parse says nothing: both are
/// application/octet-stream.
fn file_type(raw: &str) -> String {
    let token = |t: &str| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    let mut fields = raw.split(';');
    let essence = fields
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let single = match essence.split_once('/') {
        Some((kind, sub)) if token(kind) && token(sub) => !matches!(kind, "multipart" | "message"),
        _ => false,
    };
    if !single {
        return OCTET_STREAM.into();
    }
    let charset = fields.find_map(|field| {
        let (name, value) = field.split_once('=')?;
        let value = value.trim().trim_matches('"');
        (name.trim().eq_ignore_ascii_case("charset") && token(value)).then_some(value)
    });
    match charset {
        Some(charset) => format!("{essence}; charset={charset}"),
        None => essence,
    }
}

/// A file's name as the message states it: partner text made safe for a header, with no
/// path separator or quote; "attachment" when nothing is left.
pub(super) fn name(raw: &str) -> String {
    let name: String = header_text(raw)
        .chars()
        .map(|c| {
            if matches!(c, '/' | '\\' | '"') {
                '_'
            } else {
                c
            }
        })
        .collect();
    if name.is_empty() {
        "attachment".to_string()
    } else {
        name
    }
}

/// One line of the body for each file: its name, its type as the partner gave it, its size.
pub(super) fn list(out: &mut String, files: &[Attachment]) {
    for f in files {
        let _ = writeln!(
            out,
            "[Attachment: {} ({}, {} bytes)]",
            name(&f.name),
            header_text(&f.content_type),
            f.data.len()
        );
    }
}

/// The files an item carries: media, and a call's recording.
pub(super) fn of(content: &Content) -> Vec<&Attachment> {
    match content {
        Content::Mms { media, .. } => media.iter().collect(),
        Content::WhatsApp(m) => m.media.iter().collect(),
        Content::Call(c) | Content::WhatsAppCall(c) => c.recording.iter().collect(),
        Content::CellTrust(c) => c
            .media
            .iter()
            .chain(c.call.as_ref().and_then(|c| c.recording.as_ref()))
            .collect(),
        Content::Sms { .. } | Content::Email { .. } => Vec::new(),
    }
}

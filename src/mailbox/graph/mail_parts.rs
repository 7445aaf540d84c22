//! Taking attachments out of a MIME message so that it fits one request, and making the
//! bodies of the requests that carry the message and what was taken out of it.

use base64::Engine;
use mail_parser::{MessageParser, MimeHeaders, PartType};
use serde_json::{json, Value};

/// An attachment taken out of the message.
#[derive(Debug, Clone)]
pub struct Part {
    pub name: String,
    pub content_type: String,
    pub data: Content,
    /// Shown in the body (Content-Disposition inline), referred to by its Content-ID.
    pub inline: bool,
    pub content_id: Option<String>,
}

/// An attachment's content: its bytes, or its base64 as the MIME carried it (line breaks
/// removed), checked to be exactly the standard encoding of its bytes.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    Bytes(Vec<u8>),
    Base64(Vec<u8>),
}

impl Content {
    /// The number of bytes.
    pub fn len(&self) -> usize {
        match self {
            Content::Bytes(bytes) => bytes.len(),
            Content::Base64(text) => {
                let padding = text.iter().rev().take_while(|&&b| b == b'=').count();
                text.len() / 4 * 3 - padding
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        match self {
            Content::Bytes(bytes) => bytes,
            Content::Base64(text) => base64::engine::general_purpose::STANDARD
                .decode(&text)
                .expect("checked to be canonical base64 when found"),
        }
    }
}

/// How large a request carrying `bytes` as base64 is.
pub fn base64_len(bytes: usize) -> usize {
    bytes.div_ceil(3) * 4
}

/// The message made to fit one request as base64 (at most `budget` bytes), and the
/// attachments taken out of it: every binary one (posted on its own, its bytes are neither
/// parsed out of the MIME by Graph nor read back from the draft), every one of `upload_min`
/// bytes or more, then the largest of the text ones until the rest fits. A text attachment
/// otherwise stays in the MIME, where Graph reads it in its own charset. A message of the
/// renderer's shape has its files found without decoding them ([`super::mime_files`]); any
/// other is parsed whole.
pub fn split_for_requests(raw: &[u8], budget: usize, upload_min: usize) -> (Vec<u8>, Vec<Part>) {
    let Some(mut candidates) = super::mime_files::files(raw).or_else(|| parsed_files(raw)) else {
        return (raw.to_vec(), Vec::new());
    };
    // Largest first: the fewest parts leave the MIME.
    candidates.sort_by_key(|(_, (start, end), _)| std::cmp::Reverse(end - start));
    let mut remaining = raw.len();
    let mut cut: Vec<(usize, usize)> = Vec::new();
    let mut taken = Vec::new();
    for (part, span, binary) in candidates {
        if !binary && part.data.len() < upload_min && base64_len(remaining) <= budget {
            continue;
        }
        remaining -= span.1 - span.0;
        cut.push(span);
        taken.push(part);
    }
    if cut.is_empty() {
        return (raw.to_vec(), taken);
    }
    cut.sort();
    let mut out = Vec::with_capacity(remaining);
    let mut at = 0;
    for (start, end) in cut {
        out.extend_from_slice(&raw[at..start]);
        at = end;
    }
    out.extend_from_slice(&raw[at..]);
    (out, taken)
}

/// A content type as Graph takes it: type/subtype, or application/octet-stream.
pub(super) fn type_of(kind: Option<&mail_parser::ContentType<'_>>) -> String {
    kind.map(|c| match c.subtype() {
        Some(sub) => format!("{}/{sub}", c.ctype()),
        None => c.ctype().to_string(),
    })
    .unwrap_or_else(|| "application/octet-stream".into())
}

/// A text file's bytes as the partner sent them: its body undone of its transfer encoding
/// only. What the parse holds is the text read in its charset, which is not the file (bytes
/// that are not text in that charset would be replaced).
fn text_file(raw: &[u8], part: &mail_parser::MessagePart<'_>) -> Vec<u8> {
    use mail_parser::decoders::{base64::base64_decode, quoted_printable::quoted_printable_decode};
    let body = raw.get(part.offset_body as usize..part.offset_end as usize);
    match (body, part.encoding) {
        (Some(body), mail_parser::Encoding::Base64) => base64_decode(body),
        (Some(body), mail_parser::Encoding::QuotedPrintable) => quoted_printable_decode(body),
        (Some(body), mail_parser::Encoding::None) => Some(body.to_vec()),
        (None, _) => None,
    }
    .unwrap_or_else(|| part.contents().to_vec())
}

/// Every attachment of any message, by a full parse (which decodes every body); None when
/// the message cannot be parsed.
pub(super) fn parsed_files(raw: &[u8]) -> Option<Vec<super::mime_files::Found>> {
    let message = MessageParser::default().parse(raw)?;
    // Each attachment with the span it takes in the MIME, from the boundary line before
    // its headers to the end of its body.
    let mut candidates = Vec::new();
    for index in message.attachments.iter().copied() {
        let Some(part) = message.parts.get(index as usize) else {
            continue;
        };
        let (data, binary) = match &part.body {
            PartType::Binary(b) | PartType::InlineBinary(b) => (b.to_vec(), true),
            PartType::Text(_) | PartType::Html(_) => (text_file(raw, part), false),
            _ => continue,
        };
        let content_type = type_of(part.content_type());
        let start = part.offset_header as usize;
        let line_start = raw[..start.saturating_sub(2)]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let inline = part
            .content_disposition()
            .is_some_and(|d| d.ctype().eq_ignore_ascii_case("inline"));
        candidates.push((
            Part {
                name: part.attachment_name().unwrap_or("attachment").to_string(),
                content_type,
                data: Content::Bytes(data),
                inline,
                content_id: part.content_id().map(str::to_string),
            },
            (line_start, part.offset_end as usize),
            binary,
        ));
    }
    Some(candidates)
}

/// A message cut into the requests that import it: the draft's body (the MIME, less what was
/// taken out, as base64), and each attachment taken out.
pub struct Cut {
    pub draft: bytes::Bytes,
    pub taken: Vec<Taken>,
}

/// An attachment taken out of the MIME, as it goes to Graph.
pub enum Taken {
    /// Posted whole: the request's JSON body.
    Posted(bytes::Bytes),
    /// Too large to post whole: uploaded in chunks through an upload session.
    Uploaded(Upload),
}

/// An attachment to upload in chunks.
pub struct Upload {
    pub name: String,
    pub content_type: String,
    pub data: Vec<u8>,
}

/// Cuts `raw` into its requests ([`split_for_requests`]) and makes their bodies: CPU work
/// (parsing, base64) that is best done off the async threads.
pub fn cut(raw: &[u8], budget: usize, upload_min: usize) -> Cut {
    let (mime, parts) = split_for_requests(raw, budget, upload_min);
    let draft = base64::engine::general_purpose::STANDARD.encode(&mime);
    let taken = parts
        .into_iter()
        .map(|part| match part.data.len() >= upload_min {
            true => Taken::Uploaded(Upload {
                name: part.name,
                content_type: part.content_type,
                data: part.data.into_bytes(),
            }),
            false => Taken::Posted(posted_body(&part).into()),
        })
        .collect();
    Cut {
        draft: draft.into_bytes().into(),
        taken,
    }
}

/// The JSON of a file attachment posted whole. Its content, base64, is written straight into
/// the JSON (base64 never needs escaping) rather than scanned as a string value.
pub fn posted_body(part: &Part) -> Vec<u8> {
    let mut fields = serde_json::Map::new();
    fields.insert(
        "@odata.type".into(),
        json!("#microsoft.graph.fileAttachment"),
    );
    fields.insert("name".into(), json!(part.name));
    fields.insert("contentType".into(), json!(part.content_type));
    fields.insert("isInline".into(), json!(part.inline));
    if let Some(id) = &part.content_id {
        fields.insert("contentId".into(), json!(id));
    }
    let mut body = serde_json::to_vec(&Value::Object(fields)).expect("JSON serializes");
    let closing = body.pop();
    debug_assert_eq!(closing, Some(b'}'));
    body.reserve(base64_len(part.data.len()) + 18);
    body.extend_from_slice(b",\"contentBytes\":\"");
    match &part.data {
        Content::Base64(text) => body.extend_from_slice(text),
        Content::Bytes(bytes) => {
            let at = body.len();
            body.resize(at + base64_len(bytes.len()), 0);
            let written = base64::engine::general_purpose::STANDARD
                .encode_slice(bytes, &mut body[at..])
                .expect("sized for the base64");
            body.truncate(at + written);
        }
    }
    body.extend_from_slice(b"\"}");
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_posted_body_is_the_json_of_the_attachment() {
        let part = Part {
            name: "photo \"1\".jpg".into(),
            content_type: "image/jpeg".into(),
            data: Content::Bytes((0..=255u8).cycle().take(1000).collect()),
            inline: true,
            content_id: Some("<a@b>".into()),
        };
        let body: Value = serde_json::from_slice(&posted_body(&part)).unwrap();
        assert_eq!(body["@odata.type"], "#microsoft.graph.fileAttachment");
        assert_eq!(body["name"], "photo \"1\".jpg");
        assert_eq!(body["contentType"], "image/jpeg");
        assert_eq!(body["isInline"], true);
        assert_eq!(body["contentId"], "<a@b>");
        let content = base64::engine::general_purpose::STANDARD
            .decode(body["contentBytes"].as_str().unwrap())
            .unwrap();
        assert_eq!(Content::Bytes(content), part.data);
        let empty = Part {
            data: Content::Bytes(Vec::new()),
            content_id: None,
            ..part
        };
        let body: Value = serde_json::from_slice(&posted_body(&empty)).unwrap();
        assert_eq!(body["contentBytes"], "");
        assert!(body.get("contentId").is_none());
    }
}

//! Taking attachments out of a MIME message so that it fits one request.

use mail_parser::{MessageParser, MimeHeaders, PartType};

/// An attachment taken out of the message.
#[derive(Debug, Clone)]
pub struct Part {
    pub name: String,
    pub content_type: String,
    pub data: Vec<u8>,
    /// Shown in the body (Content-Disposition inline), referred to by its Content-ID.
    pub inline: bool,
    pub content_id: Option<String>,
}

/// How large a request carrying `bytes` as base64 is.
pub fn base64_len(bytes: usize) -> usize {
    bytes.div_ceil(3) * 4
}

/// The message made to fit one request as base64 (at most `budget` bytes), and the
/// attachments taken out of it: every binary one (posted on its own, its bytes are neither
/// parsed out of the MIME by Graph nor read back from the draft), every one of `upload_min`
/// bytes or more, then the largest of the text ones until the rest fits. A text attachment
/// otherwise stays in the MIME, where Graph reads it in its own charset.
pub fn split_for_requests(raw: &[u8], budget: usize, upload_min: usize) -> (Vec<u8>, Vec<Part>) {
    let Some(message) = MessageParser::default().parse(raw) else {
        return (raw.to_vec(), Vec::new());
    };
    // Each attachment with the span it takes in the MIME, from the boundary line before
    // its headers to the end of its body.
    let mut candidates: Vec<(Part, (usize, usize), bool)> = Vec::new();
    for index in message.attachments.iter().copied() {
        let Some(part) = message.parts.get(index as usize) else {
            continue;
        };
        let (data, binary) = match &part.body {
            PartType::Binary(b) | PartType::InlineBinary(b) => (b.to_vec(), true),
            PartType::Text(t) | PartType::Html(t) => (t.as_bytes().to_vec(), false),
            _ => continue,
        };
        let content_type = part
            .content_type()
            .map(|c| match c.subtype() {
                Some(sub) => format!("{}/{sub}", c.ctype()),
                None => c.ctype().to_string(),
            })
            .unwrap_or_else(|| "application/octet-stream".into());
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
                data,
                inline,
                content_id: part.content_id().map(str::to_string),
            },
            (line_start, part.offset_end as usize),
            binary,
        ));
    }
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

//! The files of a message as the renderer writes it, found without decoding them.
//!
//! Cutting a message for Graph ([`super::mail_parts::split_for_requests`]) needs each
//! attachment's place in the MIME and its bytes in base64, which is how the MIME carries
//! them already. A full parse decodes every body, and the JSON of a posted attachment then
//! encodes it again: for a day of photos and voice notes that is most of the CPU a copy
//! costs. A message of the shape the renderer makes (a multipart/mixed whose first part is
//! the text, every other part a file sent as an attachment in base64) is walked here
//! instead, its base64 taken as it is once checked to be exactly what encoding its bytes
//! gives. Any other shape, and anything this walk does not recognise, is left to the full
//! parse, which reads every message.

use super::mail_parts::{Content, Part};
use base64::Engine;
use mail_parser::{MessageParser, MimeHeaders};

/// An attachment found in the MIME: the part, its span (from the start of the boundary line
/// before it to the end of its body) and whether it is binary.
pub(super) type Found = (Part, (usize, usize), bool);

/// The attachments of a message of the renderer's shape, or None for any other message.
pub(super) fn files(raw: &[u8]) -> Option<Vec<Found>> {
    let parser = MessageParser::default();
    let top = parser.parse_headers(raw)?;
    let kind = top.content_type()?;
    if !kind.ctype().eq_ignore_ascii_case("multipart")
        || !kind.subtype()?.eq_ignore_ascii_case("mixed")
    {
        return None;
    }
    let delimiter = [b"--", kind.attribute("boundary")?.as_bytes()].concat();
    let lines = boundary_lines(
        raw,
        crate::message_bytes::header_block(raw).len(),
        &delimiter,
    )?;
    let mut found = Vec::with_capacity(lines.len().saturating_sub(2));
    for (n, pair) in lines.windows(2).enumerate() {
        let (line_start, part_start) = (pair[0].0, pair[0].1);
        // The line break before the next boundary line belongs to it.
        let next = pair[1].0;
        let end = match raw[..next].ends_with(b"\r\n") {
            true => next - 2,
            false => next.checked_sub(1)?,
        };
        let part = raw.get(part_start..end)?;
        let headers = parser.parse_headers(part)?;
        let kind = headers.content_type();
        let ctype = kind.map(|c| c.ctype().to_ascii_lowercase());
        let attached = headers
            .content_disposition()
            .is_some_and(|d| d.ctype().eq_ignore_ascii_case("attachment"));
        if n == 0 {
            // The text: plain, shown (it stays in the MIME).
            let plain = kind.is_none_or(|c| {
                c.ctype().eq_ignore_ascii_case("text")
                    && c.subtype().is_none_or(|s| s.eq_ignore_ascii_case("plain"))
            });
            if !plain || attached {
                return None;
            }
            continue;
        }
        let file =
            matches!(ctype.as_deref(), Some(t) if !["text", "multipart", "message"].contains(&t));
        let base64 = headers
            .content_transfer_encoding()
            .is_some_and(|e| e.eq_ignore_ascii_case("base64"));
        if !file || !attached || !base64 {
            return None;
        }
        // Headers closed by an empty line (without one, the part is all header).
        let block = crate::message_bytes::header_block(part);
        if !(block.ends_with(b"\n\n") || block.ends_with(b"\n\r\n")) {
            return None;
        }
        let body = part_start + block.len();
        let content = canonical_base64(&raw[body..end])?;
        found.push((
            Part {
                name: headers
                    .attachment_name()
                    .unwrap_or("attachment")
                    .to_string(),
                content_type: super::mail_parts::type_of(kind),
                data: Content::Base64(content),
                inline: false,
                content_id: headers.content_id().map(str::to_string),
            },
            (line_start, end),
            true,
        ));
    }
    Some(found)
}

/// The boundary lines after `from`: each one's start and end (its line break included), the
/// closing one last. None unless every line that starts with the delimiter is a boundary
/// line, the last of them the closing one, with at least one part before it.
fn boundary_lines(raw: &[u8], from: usize, delimiter: &[u8]) -> Option<Vec<(usize, usize)>> {
    let mut lines = Vec::new();
    for at in memchr::memmem::find_iter(&raw[from..], delimiter).map(|i| from + i) {
        if at > from && raw[at - 1] != b'\n' {
            continue;
        }
        let end = memchr::memchr(b'\n', &raw[at..]).map_or(raw.len(), |i| at + i + 1);
        match raw[at + delimiter.len()..end].trim_ascii_end() {
            b"" => lines.push((at, end)),
            b"--" => {
                lines.push((at, end));
                return (lines.len() >= 2).then_some(lines);
            }
            // A line that only starts like a boundary: not a shape this walk reads.
            _ => return None,
        }
    }
    None
}

/// What a base64 body holds besides line breaks: the alphabet, and the padding (whose place
/// is checked apart).
const BASE64: [bool; 256] = {
    let mut table = [false; 256];
    let letters = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=";
    let mut i = 0;
    while i < letters.len() {
        table[letters[i] as usize] = true;
        i += 1;
    }
    table
};

/// A base64 body without its line breaks, when that is exactly the standard encoding of the
/// bytes it decodes to (so that it may stand for them as it is); None otherwise.
pub(super) fn canonical_base64(body: &[u8]) -> Option<Vec<u8>> {
    let mut text = Vec::with_capacity(body.len());
    let mut at = 0;
    while at < body.len() {
        let end = memchr::memchr(b'\n', &body[at..]).map_or(body.len(), |i| at + i);
        let line = &body[at..end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if !line.iter().fold(true, |ok, &b| ok & BASE64[b as usize]) {
            return None;
        }
        text.extend_from_slice(line);
        at = end + 1;
    }
    if text.len() % 4 != 0 {
        return None;
    }
    // Padding only at the end, and the last group (with any unused bits zero) decodes.
    let padding = text.iter().rev().take_while(|&&b| b == b'=').count();
    if padding > 2 || memchr::memchr(b'=', &text[..text.len() - padding]).is_some() {
        return None;
    }
    if let Some(last) = text.len().checked_sub(4).map(|at| &text[at..]) {
        base64::engine::general_purpose::STANDARD
            .decode(last)
            .ok()?;
    }
    Some(text)
}

#[cfg(test)]
mod tests;

//! What the fake makes of request bodies: a draft from base64 MIME, a file from the JSON
//! that posts it.

use super::INLINE_LIMIT;
use base64::Engine;
use comms_archiver::http_server::Response;
use mail_parser::{MessageParser, MimeHeaders};
use serde_json::{json, Value};

/// An error as Graph answers it.
pub(super) fn error(status: u16, code: &str, message: &str) -> Response {
    Response::json(
        status,
        &json!({"error": {"code": code, "message": message}}),
    )
}

/// A message's attachments: name and bytes.
pub(super) type Attachments = Vec<(String, Vec<u8>)>;

/// A draft's JSON (without its id) and attachments, from base64 MIME as Graph takes it.
pub(super) fn draft_from_mime(body: &[u8]) -> Result<(Value, Attachments), Response> {
    let Ok(mime) = base64::engine::general_purpose::STANDARD.decode(body.trim_ascii()) else {
        return Err(error(
            400,
            "ErrorMimeContentInvalidBase64String",
            "Invalid base64 string for MIME content.",
        ));
    };
    let Some(parsed) = MessageParser::default().parse(&mime) else {
        return Err(error(400, "ErrorMimeContentInvalid", "not a message"));
    };
    let list = |a: Option<&mail_parser::Address<'_>>| -> Value {
        Value::Array(
            a.map(|a| a.iter().map(address).collect())
                .unwrap_or_default(),
        )
    };
    let attachments: Attachments = parsed
        .attachments()
        .map(|p| {
            (
                p.attachment_name().unwrap_or("attachment").to_string(),
                file_bytes(&mime, p),
            )
        })
        .collect();
    let json = json!({
        "isDraft": true,
        "subject": parsed.subject().unwrap_or_default(),
        "body": {"contentType": "text", "content": parsed.body_text(0).unwrap_or_default()},
        "from": parsed.from().and_then(|a| a.first()).map(address),
        "toRecipients": list(parsed.to()), "ccRecipients": list(parsed.cc()),
        "internetMessageId": parsed.message_id().map(|m| format!("<{m}>")),
        "hasAttachments": !attachments.is_empty(),
    });
    Ok((json, attachments))
}

/// A file's bytes as its transfer encoding gives them: a text file too is kept as a file,
/// not read in its charset (only the body is).
fn file_bytes(mime: &[u8], part: &mail_parser::MessagePart<'_>) -> Vec<u8> {
    use mail_parser::decoders::{base64::base64_decode, quoted_printable::quoted_printable_decode};
    use mail_parser::{Encoding, PartType};
    if !matches!(part.body, PartType::Text(_) | PartType::Html(_)) {
        return part.contents().to_vec();
    }
    let raw = &mime[part.raw_body_offset() as usize..part.raw_end_offset() as usize];
    match part.encoding {
        Encoding::Base64 => base64_decode(raw),
        Encoding::QuotedPrintable => quoted_printable_decode(raw),
        Encoding::None => Some(raw.to_vec()),
    }
    .unwrap_or_else(|| part.contents().to_vec())
}

/// A file attachment's name and bytes, from the JSON that posts it; refused from 3 MB, as
/// Graph refuses such a file outside an upload session.
pub(super) fn posted_file(body: &Value) -> Result<(String, Vec<u8>), Response> {
    let data = base64::engine::general_purpose::STANDARD
        .decode(body["contentBytes"].as_str().unwrap_or_default())
        .unwrap_or_default();
    if data.len() >= INLINE_LIMIT {
        return Err(error(
            413,
            "ErrorAttachmentSizeShouldNotBeLessThanMinimumSize",
            "use an upload session above 3 MB",
        ));
    }
    let name = body["name"].as_str().unwrap_or_default().to_string();
    Ok((name, data))
}

fn address(a: &mail_parser::Addr<'_>) -> Value {
    json!({"emailAddress": {"name": a.name().unwrap_or_default(), "address": a.address().unwrap_or_default()}})
}

//! IMAP's own syntax: dates, quoted strings and modified UTF-7 mailbox names.

/// `"20-Nov-2026 08:15:02 +0000"`, the RFC 3501 date-time, quoted.
pub(super) fn internal_date(time: chrono::DateTime<chrono::Utc>) -> String {
    format!("\"{}\"", time.format("%d-%b-%Y %H:%M:%S +0000"))
}

/// A mailbox name in IMAP's modified UTF-7 (RFC 3501 5.1.3): printable ASCII stays, '&'
/// becomes "&-", anything else goes as "&" + modified base64 of UTF-16 + "-".
pub fn modified_utf7(name: &str) -> String {
    use base64::Engine;
    let mut out = String::with_capacity(name.len());
    let mut pending: Vec<u16> = Vec::new();
    let flush = |out: &mut String, pending: &mut Vec<u16>| {
        if pending.is_empty() {
            return;
        }
        let bytes: Vec<u8> = pending.iter().flat_map(|u| u.to_be_bytes()).collect();
        let encoded = base64::engine::general_purpose::STANDARD_NO_PAD
            .encode(bytes)
            .replace('/', ",");
        out.push('&');
        out.push_str(&encoded);
        out.push('-');
        pending.clear();
    };
    for c in name.chars() {
        if (' '..='~').contains(&c) {
            flush(&mut out, &mut pending);
            if c == '&' {
                out.push_str("&-");
            } else {
                out.push(c);
            }
        } else {
            let mut units = [0u16; 2];
            pending.extend_from_slice(c.encode_utf16(&mut units));
        }
    }
    flush(&mut out, &mut pending);
    out
}

/// An IMAP quoted string.
pub(super) fn quoted(raw: &str) -> String {
    format!("\"{}\"", raw.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn folder_names_in_modified_utf7() {
        assert_eq!(modified_utf7("WhatsApp Archiver"), "WhatsApp Archiver");
        assert_eq!(modified_utf7("R&D"), "R&-D");
        // RFC 3501's own example, and a name with accents.
        assert_eq!(
            modified_utf7("~peter/mail/台北/日本語"),
            "~peter/mail/&U,BTFw-/&ZeVnLIqe-"
        );
        assert_eq!(modified_utf7("Archivé SMS"), "Archiv&AOk- SMS");
    }

    #[test]
    fn dates_and_strings_are_imap_syntax() {
        let t = chrono::Utc.with_ymd_and_hms(2026, 11, 20, 8, 5, 2).unwrap();
        assert_eq!(internal_date(t), "\"20-Nov-2026 08:05:02 +0000\"");
        assert_eq!(quoted("<a\"b@c>"), "\"<a\\\"b@c>\"");
    }
}

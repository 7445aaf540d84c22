//! The raw bytes of an RFC 5322 message, as partners deliver them and the renderer writes
//! them: where the header block ends and what a header field holds. One reading for every
//! part of the daemon (pass-through, recovery, the EML sources, Graph's transport headers),
//! CRLF and bare-LF line ends alike.

/// Messages from this size on have their CPU work (parsing, base64, digests) done off the
/// async threads, which carry every other copy's requests meanwhile.
const OFF_THREAD: usize = 64 * 1024;

/// `work` on a message: inline when it is small, on the blocking pool when it is large.
pub async fn work_on<T: Send + 'static>(
    message: &bytes::Bytes,
    work: impl FnOnce(&[u8]) -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    if message.len() < OFF_THREAD {
        return Ok(work(message));
    }
    let message = message.clone();
    tokio::task::spawn_blocking(move || work(&message)).await
}

/// Where the first empty line is: (the end of the last header line, line end included; the
/// end of the empty line). A message without one is all header.
fn empty_line(raw: &[u8]) -> (usize, usize) {
    let empty_at = |at: usize| {
        let rest = &raw[at..];
        if rest.starts_with(b"\n") {
            Some(at + 1)
        } else if rest.starts_with(b"\r\n") {
            Some(at + 2)
        } else {
            None
        }
    };
    if let Some(end) = empty_at(0) {
        return (0, end);
    }
    raw.iter()
        .enumerate()
        .filter(|(_, &b)| b == b'\n')
        .find_map(|(i, _)| empty_at(i + 1).map(|end| (i + 1, end)))
        .unwrap_or((raw.len(), raw.len()))
}

/// The header fields: every header line with its line end, without the empty line after.
pub fn header_fields(raw: &[u8]) -> &[u8] {
    &raw[..empty_line(raw).0]
}

/// The header block: the fields and the empty line that closes them.
pub fn header_block(raw: &[u8]) -> &[u8] {
    &raw[..empty_line(raw).1]
}

/// The first field named `name` (compared without case), its folded lines joined by a
/// space and trimmed.
pub fn field(raw: &[u8], name: &str) -> Option<String> {
    let name = name.as_bytes();
    let mut lines = header_fields(raw).split(|&b| b == b'\n').peekable();
    while let Some(line) = lines.next() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        if line.starts_with(b" ") || line.starts_with(b"\t") {
            continue;
        }
        if !line[..colon].trim_ascii_end().eq_ignore_ascii_case(name) {
            continue;
        }
        let mut value = String::from_utf8_lossy(line[colon + 1..].trim_ascii()).into_owned();
        while let Some(next) = lines.next_if(|l| l.starts_with(b" ") || l.starts_with(b"\t")) {
            let next = next.strip_suffix(b"\r").unwrap_or(next).trim_ascii();
            value.push(' ');
            value.push_str(&String::from_utf8_lossy(next));
        }
        return Some(value.trim().to_string());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_block_ends_at_the_first_empty_line_whatever_the_line_ends() {
        let crlf = b"A: 1\r\nB: 2\r\n\r\nbody\n\nmore";
        assert_eq!(header_fields(crlf), b"A: 1\r\nB: 2\r\n");
        assert_eq!(header_block(crlf), b"A: 1\r\nB: 2\r\n\r\n");
        let lf = b"A: 1\nB: 2\n\nbody\r\n\r\n";
        assert_eq!(header_fields(lf), b"A: 1\nB: 2\n");
        assert_eq!(header_block(lf), b"A: 1\nB: 2\n\n");
        // A bare LF inside the body of a CRLF message is no end of its headers.
        let mixed = b"A: 1\r\nB: 2\r\n\r\nx\n\ny";
        assert_eq!(header_block(mixed), b"A: 1\r\nB: 2\r\n\r\n");
        assert_eq!(header_block(b"A: 1\r\n"), b"A: 1\r\n");
        assert_eq!(header_block(b"\r\nbody"), b"\r\n");
    }

    #[test]
    fn fields_are_unfolded_and_found_without_case() {
        let m = b"A: 1\r\n b\r\nC: 2\r\n\r\nA: body";
        assert_eq!(field(m, "a").as_deref(), Some("1 b"));
        assert_eq!(field(m, "C").as_deref(), Some("2"));
        assert_eq!(field(b"C: 2\n\nA: body\n", "A"), None);
        assert_eq!(
            field(b"Subject:\n  folded\n\n", "subject").as_deref(),
            Some("folded")
        );
    }
}

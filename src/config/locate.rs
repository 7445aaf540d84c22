//! Where in the file a key is: the locator behind every error that names file, line and key.

use crate::secret::SECRET_KEYS;

/// The field named by serde's "unknown field `x`" message.
pub(super) fn unknown_field(message: &str) -> Option<&str> {
    message.strip_prefix("unknown field `")?.split('`').next()
}

/// The line and dotted key of a secret key written with a plain value (not a `{ ... }`
/// reference) in the table around `offset`, or on the line of `offset` itself.
pub(super) fn inline_secret_in_table(text: &str, offset: usize) -> Option<(usize, String)> {
    let at = line_at(text, offset);
    let mut table: Vec<String> = Vec::new();
    let mut table_start = 0;
    let mut candidates = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if let Some(header) = table_header(line) {
            table = header;
            table_start = i + 1;
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let k = unquote(k.trim());
        if SECRET_KEYS.contains(&k.as_str()) && !v.trim_start().starts_with('{') {
            let mut dotted = table.clone();
            dotted.push(k);
            candidates.push((table_start, i + 1, dotted.join(".")));
        }
    }
    // The key on the reported line, else the first in the table holding it.
    candidates
        .iter()
        .find(|(_, line, _)| *line == at)
        .or_else(|| {
            let table_of = |line: usize| {
                text.lines()
                    .take(line)
                    .enumerate()
                    .filter(|(_, l)| table_header(l).is_some())
                    .map(|(i, _)| i + 1)
                    .last()
                    .unwrap_or(0)
            };
            let wanted = table_of(at);
            candidates.iter().find(|(start, _, _)| *start == wanted)
        })
        .map(|(_, line, key)| (*line, key.clone()))
}

/// The value a serde type or value error quotes: "invalid value: integer `-3`, ..." or
/// "invalid type: string \"ten\", ...", as it would be written in TOML.
pub(super) fn offending_value(message: &str) -> Option<String> {
    let rest = message
        .strip_prefix("invalid value: ")
        .or_else(|| message.strip_prefix("invalid type: "))?;
    if let Some(quoted) = rest.strip_prefix("string \"") {
        let end = quoted.find("\", expected")?;
        return Some(format!("\"{}\"", &quoted[..end]));
    }
    let (_, value) = rest.split_once('`')?;
    Some(value.split('`').next()?.to_string())
}

/// The line and dotted key of the first key in the table around `offset` whose value is
/// written as `value`.
pub(super) fn key_with_value(text: &str, offset: usize, value: &str) -> Option<(usize, String)> {
    let table = table_at(text, offset)?;
    let mut current: Vec<String> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if let Some(header) = table_header(line) {
            current = header;
            continue;
        }
        if current != table {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.split(" #").next().unwrap_or(v).trim();
        if v == value {
            let mut dotted = table.clone();
            dotted.push(unquote(k.trim()));
            return Some((i + 1, dotted.join(".")));
        }
    }
    None
}

/// The table (header path) in force at a byte offset.
pub(super) fn table_at(text: &str, offset: usize) -> Option<Vec<String>> {
    let line_no = line_at(text, offset);
    text.lines().take(line_no).filter_map(table_header).last()
}

/// 1-based line of a byte offset.
pub(super) fn line_at(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|&b| b == b'\n')
        .count()
        + 1
}

/// The dotted key defined on the line holding `offset`, if that line is `key = value`.
pub(super) fn key_on_line(text: &str, offset: usize) -> Option<String> {
    let line_no = line_at(text, offset);
    let mut table = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if let Some(header) = table_header(line) {
            table = header;
        }
        if i + 1 == line_no {
            let (key, _) = line.split_once('=')?;
            let mut path = table.clone();
            path.push(unquote(key.trim()));
            return Some(path.join("."));
        }
    }
    None
}

/// The 1-based line defining a dotted key, or the header of its table.
pub fn line_of_key(text: &str, key: &str) -> Option<usize> {
    let mut table: Vec<String> = Vec::new();
    let mut header_line = None;
    for (i, line) in text.lines().enumerate() {
        if let Some(header) = table_header(line) {
            table = header;
            if table.join(".") == key {
                header_line = Some(i + 1);
            }
            continue;
        }
        if let Some((k, _)) = line.split_once('=') {
            let k = k.trim();
            if k.is_empty() || k.starts_with('#') {
                continue;
            }
            let mut path = table.clone();
            path.extend(k.split('.').map(|p| unquote(p.trim())));
            if path.join(".") == key {
                return Some(i + 1);
            }
        }
    }
    header_line
}

pub(super) fn table_header(line: &str) -> Option<Vec<String>> {
    let line = line.trim();
    let inner = line.strip_prefix('[')?.split(']').next()?;
    let inner = inner.trim_start_matches('[');
    Some(inner.split('.').map(|p| unquote(p.trim())).collect())
}

pub(super) fn unquote(s: &str) -> String {
    s.trim_matches('"').trim_matches('\'').to_string()
}

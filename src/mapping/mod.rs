//! User mapping, as Microsoft's partner connectors do it: the custom CSV is consulted first,
//! then the participant's own email property; a participant that maps to neither gets no copy.
//!
//! The CSV has a header row and the columns `identifier,mailbox,valid_from,valid_to`:
//! the identifier is a phone number (any format; normalized to E.164 with the default region)
//! or a partner address (anything with an '@'); the validity columns are optional and take a
//! date (`2026-11-20`, the whole day inclusive) or an RFC 3339 instant
//! (`2026-11-20T12:00:00Z`, `valid_from` inclusive, `valid_to` exclusive), so a reassigned
//! corporate number files each message with whoever held it at the time.

use crate::item::Participant;
use chrono::{DateTime, NaiveDate, Utc};
use phonenumber::country;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// The `[mapping]` section: what every connector's user mapping shares.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingConfig {
    /// ISO 3166 region for phone numbers written without a country code.
    #[serde(default = "default_region", deserialize_with = "region")]
    pub default_region: country::Id,
    /// The organisation's mail domains. An email property outside them is an external party
    /// and gets no copy. Empty: every email property counts as a mailbox.
    #[serde(default)]
    pub domains: Vec<String>,
    /// A catch-all mailbox: copies for participants that map to no one are filed there (in
    /// the connector's folder) until the mapping is fixed, and held for their owners all the
    /// same. Unset: such copies are only held.
    #[serde(default)]
    pub unmapped_mailbox: Option<String>,
}

impl Default for MappingConfig {
    fn default() -> Self {
        MappingConfig {
            default_region: default_region(),
            domains: Vec::new(),
            unmapped_mailbox: None,
        }
    }
}

impl MappingConfig {
    /// Checks the domains are mail domains.
    pub fn validate(&self) -> Result<(), crate::checks::Invalid> {
        if let Some(domain) = self.domains.iter().find(|d| !crate::checks::is_domain(d)) {
            return Err(crate::checks::Invalid::new(
                "domains",
                format!("'{domain}' is not a mail domain such as contoso.com"),
            ));
        }
        match self.unmapped_mailbox.as_deref() {
            Some(address) if normalize_address(address).is_none() => {
                Err(crate::checks::Invalid::new(
                    "unmapped_mailbox",
                    format!(
                        "'{address}' is not a mailbox address such as archive-unmapped@contoso.com"
                    ),
                ))
            }
            _ => Ok(()),
        }
    }
}

fn default_region() -> country::Id {
    country::Id::US
}

fn region<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<country::Id, D::Error> {
    let raw = <String as serde::Deserialize>::deserialize(deserializer)?;
    raw.parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "'{raw}' is not an ISO 3166 region code such as GB or US"
        ))
    })
}

/// A mapping file problem, naming the file and the line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct MappingError {
    pub file: PathBuf,
    pub line: Option<u64>,
    pub message: String,
}

impl fmt::Display for MappingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "mapping file {}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, " line {line}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// How a participant's mailbox was found: what an auditor asks of a copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "way")]
pub enum Via {
    /// A row of the connector's mapping CSV (its line in the file).
    Csv { line: u64 },
    /// The participant's email property, in the organisation's domains.
    EmailProperty,
    /// Nobody: the catch-all mailbox (`mapping.unmapped_mailbox`) files the copy until the
    /// mapping is fixed.
    CatchAll,
}

impl Via {
    /// The way, as the status log counts it.
    pub fn label(self) -> &'static str {
        match self {
            Via::Csv { .. } => "mapping_csv",
            Via::EmailProperty => "email_property",
            Via::CatchAll => "catch_all",
        }
    }
}

/// The outcome of mapping one participant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// A mailbox of the organisation receives a copy.
    Mailbox { address: String, via: Via },
    /// A party outside the organisation: no copy, nothing to report.
    External,
    /// An archived employee with no valid mailbox: reported once per day.
    Unmapped,
}

#[derive(Debug, Clone)]
struct Entry {
    mailbox: String,
    /// The optional `display_name` column: how the employee is named in the archive.
    display_name: Option<String>,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    line: u64,
}

impl Entry {
    fn covers(&self, at: DateTime<Utc>) -> bool {
        self.from.is_none_or(|f| at >= f) && self.to.is_none_or(|t| at < t)
    }

    fn overlaps(&self, other: &Entry) -> bool {
        let starts_before_other_ends = match (self.from, other.to) {
            (Some(f), Some(t)) => f < t,
            _ => true,
        };
        let other_starts_before_end = match (other.from, self.to) {
            (Some(f), Some(t)) => f < t,
            _ => true,
        };
        starts_before_other_ends && other_starts_before_end
    }
}

/// The custom mapping CSV, indexed by normalized identifier.
#[derive(Debug, Clone, Default)]
pub struct MappingTable {
    /// The file it was read from, named in each copy's record of how it was mapped.
    file: PathBuf,
    entries: HashMap<String, Vec<Entry>>,
}

impl MappingTable {
    /// Reads and validates a mapping CSV.
    pub fn load(
        path: &Path,
        region: country::Id,
        domains: &[String],
    ) -> Result<MappingTable, MappingError> {
        let file = std::fs::File::open(path).map_err(|e| MappingError {
            file: path.to_path_buf(),
            line: None,
            message: format!("cannot open: {e}"),
        })?;
        MappingTable::parse(file, path, region, domains)
    }

    /// Parses a mapping CSV from any reader; `path` names it in errors.
    pub fn parse(
        input: impl std::io::Read,
        path: &Path,
        region: country::Id,
        domains: &[String],
    ) -> Result<MappingTable, MappingError> {
        let err = |line: Option<u64>, message: String| MappingError {
            file: path.to_path_buf(),
            line,
            message,
        };
        let mut reader = csv::ReaderBuilder::new()
            .comment(Some(b'#'))
            .trim(csv::Trim::All)
            .flexible(false)
            .from_reader(input);
        let headers = reader
            .headers()
            .map_err(|e| err(Some(1), format!("cannot read the header row: {e}")))?
            .clone();
        let column = |name: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(name));
        let (Some(id_col), Some(mailbox_col)) = (column("identifier"), column("mailbox")) else {
            return Err(err(
                Some(1),
                format!(
                    "the header row must name the columns identifier,mailbox \
                     (and optionally valid_from,valid_to,display_name); found '{}'",
                    headers.iter().collect::<Vec<_>>().join(",")
                ),
            ));
        };
        let from_col = column("valid_from");
        let to_col = column("valid_to");
        let name_col = column("display_name");

        let mut table = MappingTable {
            file: path.to_path_buf(),
            ..MappingTable::default()
        };
        for record in reader.records() {
            let record = record.map_err(|e| {
                err(
                    e.position().map(|p| p.line()),
                    format!("not a valid CSV row: {e}"),
                )
            })?;
            let line = record.position().map_or(0, |p| p.line());
            let field = |col: Option<usize>| col.and_then(|c| record.get(c)).unwrap_or("");
            let identifier = field(Some(id_col));
            let key = if identifier.contains('@') {
                normalize_address(identifier).ok_or_else(|| {
                    err(
                        Some(line),
                        format!("'{identifier}' is not a valid partner address"),
                    )
                })?
            } else {
                normalize_phone(identifier, region).ok_or_else(|| {
                    err(
                        Some(line),
                        format!(
                            "'{identifier}' is not a valid phone number (default region {region:?})"
                        ),
                    )
                })?
            };
            let mailbox_raw = field(Some(mailbox_col));
            let mailbox = normalize_address(mailbox_raw).ok_or_else(|| {
                err(
                    Some(line),
                    format!("'{mailbox_raw}' is not a valid mailbox address"),
                )
            })?;
            if !in_domains(&mailbox, domains) {
                return Err(err(
                    Some(line),
                    format!(
                        "mailbox '{mailbox}' is outside the organisation's domains ({}); \
                         external parties cannot receive copies",
                        domains.join(", ")
                    ),
                ));
            }
            let from = parse_bound(field(from_col), false)
                .map_err(|m| err(Some(line), format!("valid_from: {m}")))?;
            let to = parse_bound(field(to_col), true)
                .map_err(|m| err(Some(line), format!("valid_to: {m}")))?;
            if let (Some(f), Some(t)) = (from, to) {
                if f >= t {
                    return Err(err(
                        Some(line),
                        "valid_from must be before valid_to".to_string(),
                    ));
                }
            }
            let display_name = Some(field(name_col).to_string()).filter(|n| !n.is_empty());
            let entry = Entry {
                mailbox,
                display_name,
                from,
                to,
                line,
            };
            let existing = table.entries.entry(key.clone()).or_default();
            if let Some(clash) = existing.iter().find(|e| e.overlaps(&entry)) {
                return Err(err(
                    Some(line),
                    format!(
                        "'{key}' is already mapped for an overlapping period on line {}; \
                         give the rows valid_from/valid_to dates that do not overlap",
                        clash.line
                    ),
                ));
            }
            existing.push(entry);
        }
        Ok(table)
    }

    /// The mailbox mapped to a normalized identifier at an instant.
    pub fn lookup(&self, identifier: &str, at: DateTime<Utc>) -> Option<&str> {
        self.row(identifier, at).map(|(mailbox, _)| mailbox)
    }

    /// The mailbox and the file's line that map `identifier` at `at`.
    fn row(&self, identifier: &str, at: DateTime<Utc>) -> Option<(&str, u64)> {
        self.entries
            .get(identifier)?
            .iter()
            .find(|e| e.covers(at))
            .map(|e| (e.mailbox.as_str(), e.line))
    }

    /// The display name the CSV gives the row that maps `identifier` at `at`, if any.
    fn name(&self, identifier: &str, at: DateTime<Utc>) -> Option<&str> {
        self.entries
            .get(identifier)?
            .iter()
            .find(|e| e.covers(at))
            .and_then(|e| e.display_name.as_deref())
    }

    /// The file the table was read from.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Every identifier and the mailbox it maps to at `at`.
    pub fn mapped_at(&self, at: DateTime<Utc>) -> Vec<(&str, &str)> {
        let mut out: Vec<(&str, &str)> = self
            .entries
            .iter()
            .filter_map(|(id, entries)| {
                let entry = entries.iter().find(|e| e.covers(at))?;
                Some((id.as_str(), entry.mailbox.as_str()))
            })
            .collect();
        out.sort();
        out
    }

    /// Number of identifiers mapped.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Maps the participants of one connector's items to mailboxes.
#[derive(Debug, Clone)]
pub struct Mapper {
    table: Option<MappingTable>,
    use_email_property: bool,
    domains: Vec<String>,
    catch_all: Option<String>,
}

impl Mapper {
    pub fn new(
        table: Option<MappingTable>,
        use_email_property: bool,
        domains: Vec<String>,
    ) -> Self {
        Mapper {
            table,
            use_email_property,
            domains,
            catch_all: None,
        }
    }

    /// The same mapper filing copies that map to no one into `mailbox` meanwhile.
    pub fn with_catch_all(mut self, mailbox: Option<&str>) -> Self {
        self.catch_all = mailbox.and_then(normalize_address);
        self
    }

    /// The catch-all mailbox, when configured.
    pub fn catch_all(&self) -> Option<&str> {
        self.catch_all.as_deref()
    }

    /// The mapping CSV, when the connector has one.
    pub fn table(&self) -> Option<&MappingTable> {
        self.table.as_ref()
    }

    /// How a copy was mapped, in words for its import record: the CSV's file and line, or
    /// the email property.
    pub fn explain(&self, via: Via) -> String {
        match (via, &self.table) {
            (Via::Csv { line }, Some(table)) => {
                format!("mapping CSV {} line {line}", table.file.display())
            }
            (Via::Csv { line }, None) => format!("mapping CSV line {line}"),
            (Via::EmailProperty, _) => "email property".to_string(),
            (Via::CatchAll, _) => {
                "catch-all mapping.unmapped_mailbox: no participant maps to a mailbox".to_string()
            }
        }
    }

    /// The name the mapping CSV gives a participant it maps at `at` (its `display_name`
    /// column), which the archive shows in place of the partner's.
    pub fn display_name(&self, participant: &Participant, at: DateTime<Utc>) -> Option<String> {
        let table = self.table.as_ref()?;
        let by_phone = participant.phone.clone();
        let by_address = participant.address.as_deref().and_then(normalize_address);
        by_phone
            .into_iter()
            .chain(by_address)
            .find_map(|key| table.name(&key, at).map(str::to_string))
    }

    /// CSV by phone, then CSV by partner address, then the email property.
    pub fn resolve(&self, participant: &Participant, at: DateTime<Utc>) -> Resolution {
        if let Some(table) = &self.table {
            let by_phone = participant.phone.as_deref();
            let by_address = participant.address.as_deref().and_then(normalize_address);
            for key in by_phone.into_iter().chain(by_address.as_deref()) {
                if let Some((mailbox, line)) = table.row(key, at) {
                    return Resolution::Mailbox {
                        address: mailbox.to_string(),
                        via: Via::Csv { line },
                    };
                }
            }
        }
        if self.use_email_property {
            if let Some(email) = participant.email.as_deref().and_then(normalize_address) {
                if in_domains(&email, &self.domains) {
                    return Resolution::Mailbox {
                        address: email,
                        via: Via::EmailProperty,
                    };
                }
            }
        }
        if participant.archived {
            Resolution::Unmapped
        } else {
            Resolution::External
        }
    }
}

fn in_domains(address: &str, domains: &[String]) -> bool {
    domains.is_empty()
        || address
            .rsplit_once('@')
            .is_some_and(|(_, d)| domains.iter().any(|x| x == d))
}

/// A phone number in E.164 (`+447700900123`), or None when it cannot be one.
///
/// Numbers are accepted when they parse and have an E.164 length (8 to 15 digits with a
/// national number of at least 6): range metadata lags real allocations, and reserved test
/// ranges must work too, so validity against the numbering plan is not required.
pub fn normalize_phone(raw: &str, region: country::Id) -> Option<String> {
    let raw = raw.trim();
    if raw.is_empty()
        || !raw
            .chars()
            .all(|c| c.is_ascii_digit() || " +-().".contains(c))
    {
        return None;
    }
    let number = phonenumber::parse(Some(region), raw).ok()?;
    let e164 = number.format().mode(phonenumber::Mode::E164).to_string();
    let digits = e164.len().saturating_sub(1);
    let national = number.national().to_string().len() + number.national().zeros() as usize;
    ((8..=15).contains(&digits) && national >= 6).then_some(e164)
}

/// A lowercase address with one '@', a dotted domain and no characters that mail headers or
/// file paths reserve; None otherwise.
pub fn normalize_address(raw: &str) -> Option<String> {
    let address = raw.trim().to_ascii_lowercase();
    let (local, domain) = address.split_once('@')?;
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && local
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%'*+-=?^_`{|}~.".contains(&b));
    let domain_ok = domain.contains('.')
        && domain.len() <= 253
        && domain
            .split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    (local_ok && domain_ok).then_some(address)
}

fn parse_bound(raw: &str, end: bool) -> Result<Option<DateTime<Utc>>, String> {
    if raw.is_empty() {
        return Ok(None);
    }
    if let Ok(instant) = DateTime::parse_from_rfc3339(raw) {
        return Ok(Some(instant.with_timezone(&Utc)));
    }
    let date = NaiveDate::parse_from_str(raw, "%Y-%m-%d").map_err(|_| {
        format!("'{raw}' is neither a date (2026-11-20) nor an instant (2026-11-20T12:00:00Z)")
    })?;
    // A date as valid_to includes that whole day.
    let date = if end {
        date.succ_opt().unwrap_or(date)
    } else {
        date
    };
    Ok(Some(date.and_hms_opt(0, 0, 0).expect("midnight").and_utc()))
}

#[cfg(test)]
mod tests;

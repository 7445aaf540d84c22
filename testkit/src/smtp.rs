//! The simulator's SMTP side: a day of TeleMessage's EML messages sent the way TeleMessage's
//! SMTP destination sends them, to comms-archiver's intake or to any SMTP server:
//!
//! - per message (TeleMessage's default, one email per message in real time), or threaded
//!   (one email per conversation per day, with the conversation's messages as its text);
//! - plain, or wrapped in a journal envelope (an Exchange-style journal report carrying the
//!   original as `message/rfc822`);
//! - over plain SMTP, or with STARTTLS (optionally with a client certificate, TeleMessage's
//!   "TLS with certificates"), optionally with AUTH.
//!
//! The messages are the EML files of the day's TeleMessage ZIPs (the SFTP delivery's
//! format), so the same day can be tried through both transports.

use chrono::NaiveDate;
use lettre::address::Envelope;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{
    Certificate, CertificateStore, Identity, Tls, TlsParameters,
};
use lettre::transport::smtp::PoolConfig;
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How a day is sent.
#[derive(Debug, Clone, Default)]
pub struct SendOptions {
    pub threaded: bool,
    pub journal: bool,
    /// STARTTLS, trusting this CA (PEM) for the server's certificate.
    pub starttls_ca: Option<PathBuf>,
    /// A client certificate and key (PEM) to present over TLS.
    pub client_identity: Option<(PathBuf, PathBuf)>,
    /// AUTH PLAIN after STARTTLS.
    pub auth: Option<(String, String)>,
    /// Connections used at once.
    pub connections: usize,
}

/// The EML messages of a day's TeleMessage ZIPs in `dir`, in file order.
pub fn day_messages(dir: &Path, day: NaiveDate) -> std::io::Result<Vec<Vec<u8>>> {
    let prefix = format!("{}0000-TeleMessage_", day.format("%Y%m%d"));
    let mut zips: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .map(|n| n.to_string_lossy())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".zip"))
        })
        .collect();
    zips.sort();
    let mut messages = Vec::new();
    for zip in zips {
        let mut archive = zip::ZipArchive::new(std::fs::File::open(&zip)?)?;
        let mut names: Vec<String> = archive
            .file_names()
            .filter(|n| n.to_ascii_lowercase().ends_with(".eml"))
            .map(str::to_string)
            .collect();
        names.sort();
        for name in names {
            let mut bytes = Vec::new();
            archive.by_name(&name)?.read_to_end(&mut bytes)?;
            messages.push(bytes);
        }
    }
    Ok(messages)
}

/// The header field `name` of `raw`, unfolded.
fn field(raw: &[u8], name: &str) -> Option<String> {
    comms_archiver::message_bytes::field(raw, name)
}

/// One email per conversation: the day's messages of each thread (or group, or pair of
/// numbers) as the lines of one text message, stamped with the conversation's first time.
pub fn threaded(messages: &[Vec<u8>], day: NaiveDate) -> Vec<Vec<u8>> {
    let mut threads: Vec<(String, Vec<&Vec<u8>>)> = Vec::new();
    for m in messages {
        let id = field(m, "X-TELEMESSAGE-GroupID")
            .or_else(|| field(m, "X-TELEMESSAGE-THREAD_ID"))
            .unwrap_or_else(|| {
                let mut pair = [
                    field(m, "From").unwrap_or_default(),
                    field(m, "To").unwrap_or_default(),
                ];
                pair.sort();
                format!(
                    "P{}",
                    &comms_archiver::item::sha256_hex(pair.join("|").as_bytes())[..12]
                )
            });
        match threads.iter_mut().find(|(t, _)| *t == id) {
            Some((_, list)) => list.push(m),
            None => threads.push((id, vec![m])),
        }
    }
    threads
        .into_iter()
        .map(|(id, list)| {
            let first = list[0];
            let get = |name: &str| field(first, name).unwrap_or_default();
            let mut lines = String::new();
            for m in &list {
                let parsed = mail_parser::MessageParser::default().parse(m.as_slice());
                let text = parsed
                    .as_ref()
                    .and_then(|p| p.body_text(0).map(|t| t.trim_end().to_string()))
                    .unwrap_or_default();
                lines.push_str(&format!(
                    "[{}] {} -> {}: {}\r\n",
                    field(m, "Date").unwrap_or_default(),
                    field(m, "From").unwrap_or_default(),
                    field(m, "To").unwrap_or_default(),
                    text.replace('\n', "\r\n  ")
                ));
            }
            let archive_id = format!("THREAD-{id}-{}", day.format("%Y%m%d"));
            let name = field(first, "X-TELEMESSAGE-ThreadName")
                .or_else(|| field(first, "X-TELEMESSAGE-GROUP_NAME"));
            let mut head = format!(
                "From: {}\r\nTo: {}\r\nDate: {}\r\nMessage-ID: <{archive_id}@telemessage.example>\r\n\
                 Subject: Conversation {} on {day}\r\nX-TELEMESSAGE-ArchiveMessageID: {archive_id}\r\n\
                 X-TELEMESSAGE-ArchiveInitiator: {}\r\nX-TELEMESSAGE-THREAD_ID: {id}\r\n",
                get("From"),
                get("To"),
                get("Date"),
                name.clone().unwrap_or_else(|| id.clone()),
                get("X-TELEMESSAGE-ArchiveInitiator"),
            );
            if let Some(name) = name {
                head.push_str(&format!("X-TELEMESSAGE-ThreadName: {name}\r\n"));
            }
            if let Some(t) = field(first, "X-TELEMESSAGE-MessageType") {
                head.push_str(&format!("X-TELEMESSAGE-MessageType: {t}\r\n"));
            }
            head.push_str("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n");
            head.push_str("Content-Transfer-Encoding: 8bit\r\n\r\n");
            head.push_str(&lines);
            head.into_bytes()
        })
        .collect()
}

/// The message wrapped in a journal envelope, as a journaling destination receives it.
pub fn journal_wrapped(original: &[u8]) -> Vec<u8> {
    let get = |name: &str| field(original, name).unwrap_or_default();
    let boundary = format!(
        "journal-{}",
        &comms_archiver::item::sha256_hex(original)[..16]
    );
    let mut out = format!(
        "From: journal@telemessage.example\r\nTo: journal@telemessage.example\r\n\
         Subject: {}\r\nDate: {}\r\nMessage-ID: <journal-{}@telemessage.example>\r\n\
         X-MS-Journal-Report:\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n\
         --{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
         Sender: {}\r\nSubject: {}\r\nMessage-Id: {}\r\nTo: {}\r\n\r\n\
         --{boundary}\r\nContent-Type: message/rfc822\r\n\r\n",
        get("Subject"),
        get("Date"),
        &boundary[8..],
        get("From"),
        get("Subject"),
        get("Message-ID"),
        get("To"),
    )
    .into_bytes();
    out.extend_from_slice(original);
    // The CRLF before a boundary belongs to the boundary (RFC 2046 5.1.1), not the message.
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    out
}

/// Sends `messages` to `recipient` at `server` (host:port), each once, `connections` at a
/// time. Returns how many the server answered 250; the first refusal ends it with an error.
pub async fn send(
    server: &str,
    recipient: &str,
    messages: Vec<Vec<u8>>,
    options: &SendOptions,
) -> Result<usize, String> {
    comms_archiver::install_crypto_provider();
    let (host, port) = server
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
        .ok_or_else(|| format!("--smtp-to {server}: expected HOST:PORT"))?;
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.clone())
        .port(port)
        .timeout(Some(std::time::Duration::from_secs(60)))
        .pool_config(PoolConfig::new().max_size(options.connections.max(1) as u32));
    if let Some(ca) = &options.starttls_ca {
        let pem = std::fs::read(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
        // Only the CA given is trusted, not the machine's roots.
        let mut tls = TlsParameters::builder(host.clone())
            .certificate_store(CertificateStore::None)
            .add_root_certificate(Certificate::from_pem(&pem).map_err(|e| e.to_string())?);
        if let Some((cert, key)) = &options.client_identity {
            let read = |p: &PathBuf| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
            // lettre's rustls side takes the certificate's bytes as DER, whatever its
            // name says (0.11.23), so the PEM is decoded here.
            use rustls_pki_types::pem::PemObject;
            let der = rustls_pki_types::CertificateDer::from_pem_slice(&read(cert)?)
                .map_err(|e| format!("{}: {e}", cert.display()))?;
            let identity =
                Identity::from_pem(der.as_ref(), &read(key)?).map_err(|e| e.to_string())?;
            tls = tls.identify_with(identity);
        }
        builder = builder.tls(Tls::Required(
            tls.build_rustls().map_err(|e| e.to_string())?,
        ));
    }
    if let Some((user, password)) = &options.auth {
        builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
    }
    let transport = Arc::new(builder.build());
    let to: Address = recipient.parse().map_err(|e| format!("{recipient}: {e}"))?;
    let from: Address = "archive@telemessage.example".parse().expect("an address");
    let envelope = Envelope::new(Some(from), vec![to]).map_err(|e| e.to_string())?;
    let messages = Arc::new(std::sync::Mutex::new(messages.into_iter()));
    let workers = (0..options.connections.max(1)).map(|_| {
        let (transport, messages, envelope) =
            (transport.clone(), messages.clone(), envelope.clone());
        tokio::spawn(async move {
            let mut sent = 0usize;
            loop {
                let next = messages.lock().expect("not poisoned").next();
                let Some(message) = next else {
                    return Ok::<usize, String>(sent);
                };
                // lettre always ends DATA with CRLF "." CRLF after the bytes it is given, so
                // a message's own last CRLF is left for it to send.
                let message = message.strip_suffix(b"\r\n").unwrap_or(&message);
                transport
                    .send_raw(&envelope, message)
                    .await
                    .map_err(|e| format!("the server refused a message: {e}"))?;
                sent += 1;
            }
        })
    });
    let mut sent = 0;
    for worker in futures::future::join_all(workers).await {
        sent += worker.map_err(|e| e.to_string())??;
    }
    Ok(sent)
}

/// The day's messages as `options` asks for them.
pub fn prepared(messages: Vec<Vec<u8>>, day: NaiveDate, options: &SendOptions) -> Vec<Vec<u8>> {
    let messages = match options.threaded {
        true => threaded(&messages, day),
        false => messages,
    };
    match options.journal {
        true => messages.iter().map(|m| journal_wrapped(m)).collect(),
        false => messages,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use comms_archiver::sources::eml::{EmlFlavor, EmlFormat};
    use comms_archiver::sources::RecordFormat;

    #[test]
    fn every_way_of_sending_the_day_gives_messages_the_intake_reads() {
        let fixtures =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/telemessage-zip");
        let day = NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
        let messages = day_messages(&fixtures, day).unwrap();
        assert_eq!(messages.len(), 3);
        let format = EmlFormat {
            flavor: EmlFlavor::TeleMessage,
            region: phonenumber::country::Id::GB,
        };
        for (threaded, journal) in [(false, false), (true, false), (false, true), (true, true)] {
            let options = SendOptions {
                threaded,
                journal,
                ..Default::default()
            };
            for m in prepared(messages.clone(), day, &options) {
                let record = format.decode(&m);
                assert!(
                    record.is_ok(),
                    "{threaded} {journal}: {record:?}\n{}",
                    String::from_utf8_lossy(&m)
                );
            }
        }
    }
}
